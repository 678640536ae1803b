"""Pictures: heatmaps, traces and layer curves drawn headlessly; the HTML page; the `lens` and `trace` commands."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from lenssample import Trace, trajectory
from lenssample.cli import main
from lenssample.plotting.figures import (
    STATISTICS,
    get_statistic,
    plot_layer_curves,
    plot_trace,
    plot_trajectory,
)
from lenssample.plotting.html import trajectory_html
from lenssample.strategies.base import STRATEGIES, Strategy, StrategyOutput
from tests.conftest import LAYERS, VOCAB, make_tiny_model


class OddTokenizer:
    """Tokens that would break naive rendering: mathtext dollars, HTML markup, slashes, whitespace."""

    def decode(self, ids):
        (i,) = ids
        return ["$^$", "<b>&", "a/b", " x", "\n"][i % 5] + str(i)


@pytest.fixture(scope="module")
def traj():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (12,), generator=torch.Generator().manual_seed(0))
    return trajectory(model, OddTokenizer(), ids)


def _check_png(path, fig, dpi=100):
    """The file is a PNG of the figure's size, under 300 KB, and not blank."""
    assert path.stat().st_size < 300_000
    pixels = imread(path)
    width, height = fig.get_size_inches() * dpi
    assert abs(pixels.shape[1] - width) <= 2 and abs(pixels.shape[0] - height) <= 2
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # a blank (or single-colour) image has ~0
    assert len(np.unique(rgb.reshape(-1, 3).round(2), axis=0)) > 20
    return pixels


@pytest.mark.parametrize("stat", ["prob", "xent"])  # xent has a NaN column (no next token at the end)
def test_heatmap_png(traj, stat, tmp_path):
    path = tmp_path / f"{stat}.png"
    fig = plot_trajectory(traj, stat=stat, path=path)
    _check_png(path, fig)


@pytest.mark.parametrize("stat", list(STATISTICS))
def test_heatmap_layout_for_every_statistic(traj, stat):
    fig = plot_trajectory(traj, stat=stat)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == len(traj.positions) and len(ax.get_yticks()) == LAYERS + 1
    # Row 0 (bottom) is the embedding, the top row the final layer.
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "emb 0" and labels[-1] == f"final {LAYERS}"
    # The image holds exactly the statistic, rows in layer order.
    shown = np.ma.filled(ax.images[0].get_array(), np.nan)
    np.testing.assert_allclose(shown, getattr(traj, STATISTICS[stat].attr), equal_nan=True)


def test_heatmap_cells_and_column_marks(traj):
    fig = plot_trajectory(traj, stat="kl", max_positions=5)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == 5  # the last 5 columns
    last = traj.last(5)
    cells = [t.get_text() for t in ax.texts]
    assert cells[: len(last.positions)] == [t.replace("$", r"\$") for t in last.top_tokens[0]]
    (top,) = ax.child_axes  # the secondary x axis on top
    assert top.get_xlabel().startswith("actual next token")
    marks = [t.get_text().endswith("✓") for t in top.get_xticklabels()]
    assert marks == last.matches.tolist()


def test_svg_and_pdf_output(traj, tmp_path):
    plot_trajectory(traj.window(0, 4), stat="rank", path=tmp_path / "a.svg")
    assert (tmp_path / "a.svg").read_text().lstrip().startswith("<?xml")
    plot_trajectory(traj.window(0, 4), path=tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"


def test_plot_errors(traj, tmp_path):
    with pytest.raises(ValueError, match="stat='kll' is not known.*Did you mean 'kl'"):
        plot_trajectory(traj, stat="kll")
    with pytest.raises(ValueError, match="does not exist; create it first"):
        plot_trajectory(traj, path=tmp_path / "missing" / "a.png")
    with pytest.raises(ValueError, match="extension '.jpg'"):
        plot_trajectory(traj, path=tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="max_positions=0"):
        plot_trajectory(traj, max_positions=0)
    with pytest.raises(TypeError, match="Trajectory"):
        plot_trajectory({"kl": 1})
    assert get_statistic("xent").attr == "xent"


def test_html_is_self_contained_and_holds_the_top_tokens(traj, tmp_path):
    path = tmp_path / "lens.html"
    page = trajectory_html(traj, stat="entropy", path=path)
    assert path.read_text(encoding="utf-8") == page
    for forbidden in ("http://", "https://", "//", "<link", " src="):
        assert forbidden not in page
    assert page.count('<td class="cell"') == (LAYERS + 1) * len(traj.positions)
    assert "<b>&" not in page  # tokens are escaped
    # Every cell's tooltip lists its top-k tokens with their probabilities, most probable first.
    tips = re.findall(r'<div class="tip">(.*?)</div>', page)
    assert len(tips) == (LAYERS + 1) * len(traj.positions)
    final_layer_first = tips[0]  # first row of the table is the final layer, first column position 0
    rows = re.findall(r"<tr><td>(.*?)</td><td>([0-9.]+)</td></tr>", final_layer_first)
    expected = [
        (
            tok.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("/", "&#47;"),
            f"{p:.3f}",
        )
        for tok, p in zip(traj.topk_tokens[-1, 0], traj.topk_probs[-1, 0])
    ]
    assert rows == expected and len(rows) == 5
    for stat in STATISTICS:
        assert f'data-{stat}="#' in page
    with pytest.raises(ValueError, match="extension '.png'"):
        trajectory_html(traj, path=tmp_path / "a.png")


def _trace():
    info = {
        "premature_layer": torch.tensor([[2, 2, 0, 4, 2, 2], [0, 0, 0, 0, 0, 0]]),
        "accepted": torch.tensor([[3, 0, 1, 2, 4, 0], [1, 1, 1, 1, 1, 1]]),
    }
    return Trace(layers=(0, 2, 4), info=info, blocks_per_step=4.0)


def test_trace_plot(tmp_path):
    path = tmp_path / "trace.png"
    tokens = ["␣The", "␣cat", "$^$", "↵", "␣sat", "."]
    fig = plot_trace(_trace(), tokens=tokens, path=path)
    _check_png(path, fig)
    layer_ax, accepted_ax = fig.axes[:2]
    np.testing.assert_array_equal(layer_ax.lines[0].get_ydata(), [2, 2, 0, 4, 2, 2])
    assert [p.get_height() for p in accepted_ax.patches] == [3, 0, 1, 2, 4, 0]
    assert [t.get_text() for t in accepted_ax.get_xticklabels()] == [t.replace("$", r"\$") for t in tokens]
    # Only one key, second row; steps are not tokens when the counts differ.
    fig = plot_trace(_trace(), tokens=["a", "b"], keys=["accepted"], row=1)
    assert len(fig.axes) == 1 and [p.get_height() for p in fig.axes[0].patches] == [1] * 6


def test_trace_errors():
    with pytest.raises(ValueError, match="records no per-token decisions"):
        plot_trace(Trace(layers=(4,)))
    with pytest.raises(ValueError, match="Did you mean 'accepted'"):
        plot_trace(_trace(), keys=["acepted"])
    with pytest.raises(ValueError, match="row=2"):
        plot_trace(_trace(), row=2)
    with pytest.raises(TypeError, match="GenerateOutput or Trace"):
        plot_trace([1, 2])


def test_layer_curves(tmp_path):
    layers = list(range(LAYERS + 1))
    curves = {
        "logit": {"kl": [9.0, 6.0, 4.0, 1.0, 0.0], "top1": [0.0, 0.2, 0.4, 0.7, 1.0]},
        "tuned": {"kl": [2.0, 1.0, 0.5, 0.1, 0.0], "top1": [0.3, 0.5, 0.6, 0.9, 1.0]},
    }
    path = tmp_path / "curves.png"
    fig = plot_layer_curves(curves, layers=layers, path=path, title="lens quality")
    _check_png(path, fig)
    kl_ax, top1_ax = fig.axes
    assert [line.get_label() for line in kl_ax.lines] == ["logit", "tuned"]
    np.testing.assert_array_equal(top1_ax.lines[1].get_ydata(), curves["tuned"]["top1"])
    assert kl_ax.get_yscale() == "log" and top1_ax.get_yscale() == "linear"
    fig = plot_layer_curves({"a": {"kl": [1.0, -1.0]}})  # a negative value: no log scale
    assert fig.axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="curves is empty"):
        plot_layer_curves({})
    with pytest.raises(ValueError, match="has 2 values but 5 layers"):
        plot_layer_curves({"logit": {"kl": [1.0, 2.0]}}, layers=layers)


# --- command line -------------------------------------------------------------------------------------------


def test_lens_cli_bad_input_exits_2(capsys, tmp_path):
    cases = [
        (["lens", ""], "text is empty"),
        (["lens", "hi", "--stat", "entropie"], "Did you mean 'entropy'"),
        (["lens", "hi", "--out", str(tmp_path / "nope" / "a.png")], "does not exist"),
        (["lens", "hi", "--out", str(tmp_path / "a.gif")], "extension '.gif'"),
        (["lens", "hi", "--last", "3", "--start", "1"], "--last cannot be combined"),
        (["trace", "hi", "--out", str(tmp_path / "a.html")], "extension '.html'"),
        (["trace", "", "--out", str(tmp_path / "a.png")], "prompt is empty"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


@dataclasses.dataclass(frozen=True, kw_only=True)
class FirstConfidentLayer(Strategy):
    """Test strategy recording a chosen layer per step: the first layer whose top probability passes a threshold."""

    name = "test_first_confident"
    threshold: float = 0.3

    def layers(self, num_layers):
        return tuple(range(num_layers // 2, num_layers + 1))

    def __call__(self, lens_logits, layers):
        confident = torch.softmax(lens_logits, -1).amax(-1) >= self.threshold  # [rows, n_layers]
        confident[:, -1] = True
        index = confident.float().argmax(-1)
        logits = lens_logits[torch.arange(len(index)), index]
        return StrategyOutput(logits=logits, info={"exit_layer": torch.tensor(layers)[index]})


@pytest.mark.real
def test_lens_and_trace_cli_on_default_model(real_model, capsys, tmp_path, monkeypatch):
    # The commands load the model through `load` (trace through cli.common's generate_from_args); hand them the
    # session's copy (saves a load each).
    monkeypatch.setattr("lenssample.cli.lens.load", lambda args: real_model)
    monkeypatch.setattr("lenssample.cli.common.load", lambda args: real_model)
    text = "The capital of France is Paris. The capital of Germany is"
    assert main(["lens", text, "--last", "3", "--out", str(tmp_path / "a.png"), "--stat", "rank"]) == 0
    assert imread(tmp_path / "a.png")[..., :3].std() > 0.05
    assert main(["lens", text, "--start", "-2", "--out", str(tmp_path / "a.html")]) == 0
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "␣Berlin" in page and "//" not in page and page.count('<td class="cell"') == 31 * 2
    assert main(["lens", text, "--last", "2", "--layers", "0,30", "--stat", "xent"]) == 0
    out = capsys.readouterr().out
    assert "␣Berlin" in out and "cross-entropy" in out
    monkeypatch.setitem(STRATEGIES, FirstConfidentLayer.name, FirstConfidentLayer)
    argv = [
        "trace",
        "The capital of France is",
        "--strategy",
        "test_first_confident",
        "--max-new-tokens",
        "4",
    ]
    assert main([*argv, "--out", str(tmp_path / "t.png")]) == 0
    assert imread(tmp_path / "t.png")[..., :3].std() > 0.05
    assert main(["trace", "Hi", "--max-new-tokens", "2", "--out", str(tmp_path / "u.png")]) == 2
    assert "records no per-token decisions" in capsys.readouterr().err


def test_lens_cli_positions_window():
    from argparse import Namespace

    from lenssample.cli.lens import choose_positions

    def args(last=None, start=None, end=None):
        return Namespace(last=last, start=start, end=end)

    assert choose_positions(args(), 100, "image") == list(range(76, 100))  # long text: the last 24 by default
    assert choose_positions(args(), 5, "text") == list(range(5))
    assert choose_positions(args(last=3), 10, "image") == [7, 8, 9]
    assert choose_positions(args(start=-4, end=-1), 10, "image") == [6, 7, 8]
    assert choose_positions(args(start=2), 10, "html") == list(range(2, 10))
    with pytest.raises(ValueError, match="selects no position"):
        choose_positions(args(start=8, end=3), 10, "image")
    with pytest.raises(ValueError, match="too many for image output"):
        choose_positions(args(start=0), 500, "image")
