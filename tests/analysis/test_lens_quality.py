"""evals/lens_quality/run.py on a tiny model: leave-one-book-out folds, resume, pooling; Wikipedia part."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lenssample.lens.train import TrainConfig
from tests.eval_helpers import TEXT, load_tiny, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
RUNNER = Path(__file__).resolve().parents[2] / "evals" / "lens_quality" / "run.py"
RECIPE = TrainConfig(steps=2, max_tokens=300, seq_len=32, batch_positions=8, cache_positions=64,
                     heldout_positions=16)  # fmt: skip


def _runner():
    spec = importlib.util.spec_from_file_location("lens_quality_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lobo_writes_folds_resumes_and_pools_by_positions(tmp_path, monkeypatch):
    run = _runner()
    model, tokenizer = load_tiny()
    books = {"long": [TEXT, TEXT.upper()], "short": [TEXT[:40]], "other": [TEXT[::-1]]}
    calls, train = [], run.train_tuned_lens
    monkeypatch.setattr(run, "train_tuned_lens", lambda *a, **k: calls.append(a[1]) or train(*a, **k))
    kwargs = dict(positions=48, folds=["long", "short"], model_name="tiny")
    summary = run.run_lobo(model, tokenizer, books, RECIPE, tmp_path, **kwargs)
    assert len(calls) == 2 and len(calls[1]) == 18  # "short" held out: the 12 + 6 windows of the others
    folder = tmp_path / "folds"
    assert sorted(p.name for p in folder.iterdir()) == ["long.json", "short.json"]  # checkpoints removed
    folds = {b: json.loads((folder / f"{b}.json").read_text()) for b in ("long", "short")}
    assert [folds[b]["positions"] for b in folds] == [48, 38]  # "short" holds 31 + 7 positions
    for fold in folds.values():
        assert fold["training"]["steps"] == 2 and {"wall_seconds", "cpu_seconds"} <= set(fold)

    pooled = json.loads((tmp_path / "lobo.json").read_text())
    assert pooled["positions"] == 86 and pooled["folds"]["short"]["positions"] == 38
    for name in ("logit", "tuned"):
        for metric in ("kl", "agreement", "cross_entropy"):
            long, short = (np.array(f["metrics"][name][metric]) for f in folds.values())
            np.testing.assert_allclose(pooled["metrics"][name][metric], (48 * long + 38 * short) / 86)
    metrics = [f["metrics"] for f in folds.values()]
    ratios = [np.divide(m["tuned"]["kl"][:-1], m["logit"]["kl"][:-1]) for m in metrics]
    worst = ["long" if a >= b else "short" for a, b in zip(*ratios)]
    assert [w["book"] for w in pooled["worst"][:-1]] == worst
    assert pooled["goal"]["layers"] == [1, 3]  # L/3 to 5L/6 of the tiny model's 4 layers
    table = (tmp_path / "lobo.md").read_text()
    assert "worst book: tuned kl / logit" in table and "Goal, tuned KL <= 0.1" in table
    assert (tmp_path / "lobo.png").stat().st_size > 0

    calls.clear()  # a rerun reads the finished folds back and trains nothing
    assert run.run_lobo(model, tokenizer, books, RECIPE, tmp_path, **kwargs) == summary and calls == []
    with pytest.raises(ValueError, match="other settings .* pass another --out"):
        run.run_lobo(model, tokenizer, books, RECIPE, tmp_path, **{**kwargs, "positions": 40})


def test_wikipedia_part_trains_and_saves_a_missing_lens(tmp_path):
    run = _runner()
    model, tokenizer = load_tiny()
    goal = run.run_wikipedia(model, tokenizer, tmp_path / "lens", [TEXT, TEXT.upper()], [TEXT[::-1]], RECIPE,
                             tmp_path, positions=64, model_name="tiny")  # fmt: skip
    saved = json.loads((tmp_path / "wikipedia.json").read_text())
    assert saved["positions"] == 64 and saved["goal"] == goal and saved["training"]["data"] == "mixed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens", "wikipedia.json", "wikipedia.md"]
    assert "tuned kl / logit" in (tmp_path / "wikipedia.md").read_text()


def test_command_line_errors_name_the_flag():
    run = _runner()
    with pytest.raises(ValueError, match="--books='dublners' is not one of .* Did you mean 'dubliners'"):
        run.main(["--books", "dublners"])
    with pytest.raises(ValueError, match="--steps -1"):
        run.main(["--steps", "-1"])
