"""Issue 18, one test per behaviour the README promises (tests/test_readme.py runs the README itself)."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lenssample
from lenssample.cli import build_parser, main
from lenssample.decoding.settings import DEFAULT_MAX_NEW_TOKENS, DecodingSettings
from lenssample.plotting.figures import LOG_FLOOR, output_folder, plot_bars, plot_layer_curves, plot_trace
from tests.conftest import make_tiny_model

REPO = Path(__file__).resolve().parents[1]


# --- 2. examples: arguments and output folders, checked before any computation --------------------------------


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "examples" / name), *args], capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": ""})  # fmt: skip


def test_layer_curves_refuses_a_folder_that_is_no_lens(tmp_path):
    start = time.perf_counter()
    result = run_example("layer_curves.py", str(tmp_path))  # e.g. an output folder given where the lens goes
    assert result.returncode == 2 and "is not a saved tuned lens" in result.stderr
    assert "--out DIR" in result.stderr and not list(tmp_path.iterdir())
    assert time.perf_counter() - start < 60  # no model load


@pytest.mark.parametrize("name", ["lens_heatmap.py", "decoding_trace.py", "layer_curves.py"])
def test_example_output_folder_checked_first(name, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_example(name, "--out", str(blocker))
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr


def test_examples_never_default_to_tracked_folders():
    for script in (REPO / "examples").glob("*.py"):
        source = script.read_text()
        assert 'docs/images")' not in source and 'else "docs/images"' not in source, script.name
        if "path=" in source:  # writes files: through output_folder, a temporary folder by default
            assert "output_folder(args.out)" in source, script.name


def test_output_folder(tmp_path):
    first, second = output_folder(), output_folder()
    assert first.is_dir() and second.is_dir() and first != second and not any(first.iterdir())
    nested = output_folder(tmp_path / "a" / "b")
    assert nested.is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="--out .* is a file"):
        output_folder(tmp_path / "f")


# --- 4. a FitResult is not a strategy ---------------------------------------------------------------------------


def test_fit_result_passed_to_generate_points_at_strategy():
    from lenssample.strategies.fit import fit_layer_weights

    model = make_tiny_model("llama")
    texts = [torch.randint(0, model.config.vocab_size, (24,))]
    result = fit_layer_weights(model, None, texts, layers=[1, 2])
    with pytest.raises(TypeError, match=r"\.strategy"):
        lenssample.generate(model, torch.tensor([[1, 2, 3]]), result, max_new_tokens=2)
    out = lenssample.generate(model, torch.tensor([[1, 2, 3]]), result.strategy, max_new_tokens=2)
    assert out.new_tokens.shape == (1, 2)


# --- 5. an unknown model offline: exit 2, one line, at once -----------------------------------------------------


def test_unknown_model_offline_fails_at_once(monkeypatch, capsys):
    import huggingface_hub.constants

    import lenssample.cli.common as common

    monkeypatch.setattr(common, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    assert main(["generate", "Hi", "--model", "nonexistent-model"]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model 'nonexistent-model'" in err[0] and "embedded model" in err[0]
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # the loaders will not retry either


def test_misspelt_embedded_model_suggests_the_name(monkeypatch, capsys):
    import lenssample.cli.common as common

    monkeypatch.setattr(common, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["demo", "--model", "smollm2-135m-instructt"]) == 2
    assert "Did you mean 'smollm2-135m-instruct'?" in capsys.readouterr().err


def test_unknown_model_subprocess_offline():
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lenssample", "generate", "Hi", "--model", "nonexistent-model"],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(REPO), "PATH": "", "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - start < 60


# --- 6. pictures ---------------------------------------------------------------------------------------------------


def test_trace_title_fits_a_short_generation():
    trace = lenssample.decoding.outputs.Trace(layers=(30,), info={"exit_layer": torch.tensor([[22, 30, 25]])})
    title = "early-exit:measure=max-prob,threshold=0.9: The capital of France is Paris, which is a city"
    fig = plot_trace(trace, tokens=["a", "b", "c"], num_layers=30, title=title)
    fig.canvas.draw()
    box, page = fig._suptitle.get_window_extent(), fig.bbox
    assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1
    assert "Paris" in fig._suptitle.get_text()  # wrapped, not cut


def test_layer_curves_leave_out_the_final_layers_zero_kl_on_a_log_axis():
    kl = [20.0, 5.0, 0.5, 3e-8]  # float noise at the final layer, as lens-eval averages it
    fig = plot_layer_curves({"logit": {"kl": kl, "agreement": [0.0, 0.2, 0.6, 1.0]}}, layers=[0, 10, 20, 30])
    kl_ax = fig.axes[0]
    y = np.asarray(kl_ax.get_lines()[0].get_ydata(), dtype=float)
    assert kl_ax.get_yscale() == "log" and np.isnan(y[-1]) and np.allclose(y[:3], kl[:3])
    assert kl_ax.get_ylim()[0] > LOG_FLOOR  # the axis does not stretch down to the dropped point


def test_bars_use_a_log_axis_when_values_span_orders_of_magnitude(tmp_path):
    fig = plot_bars({"final": 14.6, "layer:layer=24": 2.9e6}, ylabel="perplexity", path=tmp_path / "bars.png")
    assert fig.axes[0].get_yscale() == "log" and (tmp_path / "bars.png").is_file()
    assert plot_bars({"final": 0.30, "layer:layer=24": 0.22}).axes[0].get_yscale() == "linear"
    assert plot_bars({"a": -1.0, "b": 500.0}).axes[0].get_yscale() == "linear"


# --- 7. trace takes a schedule -------------------------------------------------------------------------------------


def test_trace_takes_a_schedule():
    args = build_parser().parse_args(
        ["trace", "x", "--schedule", "early-exit:threshold=0.9", "--out", "a.png"]
    )
    assert args.schedule == "early-exit:threshold=0.9"


# --- 8. score() says why a sum is -inf -----------------------------------------------------------------------------


def test_score_warns_about_excluded_tokens_and_names_the_fix():
    model = make_tiny_model("llama")
    ids = torch.randint(0, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"excluded \d+ of 31 observed tokens.*excluded_logit"):
        out = lenssample.score(model, ids, lenssample.DoLa(layers=[0], alpha=1.0))
    assert out.excluded.any() and torch.isneginf(out.token_log_probs.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = lenssample.score(model, ids, lenssample.DoLa(layers=[0], alpha=1.0, excluded_logit=-1000.0))
    assert torch.isfinite(fixed.token_log_probs.sum()) and not fixed.excluded.any()


# --- 9. consistency ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["generate", "x"], ["trace", "x", "--out", "a.png"], ["demo"]])
def test_default_new_tokens_is_pythons(command):
    args = build_parser().parse_args(command)
    cli_default = getattr(args, "max_new_tokens", None) or DecodingSettings().max_new_tokens
    assert cli_default == DEFAULT_MAX_NEW_TOKENS == DecodingSettings().max_new_tokens == 32


@pytest.mark.parametrize(
    "command", [["generate", "x"], ["demo"], ["lens", "x"], ["trace", "x", "--out", "a.png"]]
)
def test_threads_everywhere_and_checked_before_the_model(command, capsys):
    assert build_parser().parse_args([*command, "--threads", "2"]).threads == 2
    assert main([*command, "--threads", "0"]) == 2
    assert "--threads 0: must be >= 1" in capsys.readouterr().err


@pytest.mark.real
def test_no_loading_bar_on_the_command_line(real_model, capfd):
    assert main(["generate", "Hi", "--max-new-tokens", "2"]) == 0
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err and captured.out.strip()
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # restored for Python callers


@pytest.mark.real
def test_demo_table_has_the_lens_tables_layout(real_model, capsys, monkeypatch):
    import lenssample.plotting.text as text

    calls = []
    original = text.text_table
    monkeypatch.setattr(text, "text_table", lambda *a, **k: calls.append((a[1:], k)) or original(*a, **k))
    assert main(["lens", "The capital of France is", "--last", "2", "--layers", "0,30"]) == 0
    from lenssample.cli.demo import show

    model, tokenizer = real_model
    show(model, tokenizer, "The capital of France is", 1, strategies=())
    assert len(calls) == 2 and calls[0] == calls[1] == (("prob",), {})


@pytest.mark.real
def test_apply_lens_returns_a_lens_output(real_model):
    model, tokenizer = real_model
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = lenssample.apply_lens(model, ids, layers=[10, 20, 30])
    assert isinstance(out, lenssample.LensOutput)
    assert out.logits.shape == (1, ids.shape[1], 3, model.config.vocab_size)


@pytest.mark.real
def test_no_loading_bar_from_python_either(real_model, capfd):
    from transformers.utils import logging as hf_logging

    from lenssample import load_model

    capfd.readouterr()
    load_model()
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored


def test_a_one_item_difference_says_why_it_has_no_interval():
    from lenssample.eval.report import _diff_cell

    cell = _diff_cell({"acc": {"diff": 0.5, "low": None, "high": None}, "paired_items": 1})
    assert cell == "acc +0.5 [no interval: 1 item]"
    assert _diff_cell({"acc": {"diff": 0.5, "low": 0.1, "high": 0.9}}) == "acc +0.5 [+0.1, +0.9]"


@pytest.mark.real
def test_the_demo_prints_no_warning(real_model, capfd):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--max-new-tokens", "2"]) == 0
    assert not [str(w.message) for w in caught], "the demo should print nothing alarming"
    assert "Warning" not in capfd.readouterr().err


@pytest.mark.parametrize("value", ["12.5", None, True, [1.0]])
def test_bars_refuse_values_that_are_not_numbers(value):
    with pytest.raises(ValueError, match=r"values\['b'\]=.* is not a number; pass \{name: number\}"):
        plot_bars({"a": 1.0, "b": value})
