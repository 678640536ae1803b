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


def test_ceiling_scores_as_the_lens_comparison_and_fine_tunes_only_its_layers(tmp_path):
    spec = importlib.util.spec_from_file_location("lens_quality_ceiling", RUNNER.with_name("ceiling.py"))
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    model, tokenizer = load_tiny()
    books = {"long": [TEXT, TEXT.upper()], "other": [TEXT[::-1], TEXT.lower()]}
    schedules = ((0, 8, 1e-3), (4, 8, 1e-2))
    result = ceiling.ceiling(model, tokenizer, books, "long", [1, 2], RECIPE, tmp_path, positions=40,
                             schedules=schedules, strengths=(1e-2,))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ceiling_long.json", "ceiling_long.md"]
    assert json.loads((tmp_path / "ceiling_long.json").read_text()) == result
    rows = {row["fit"].split(" (")[0]: row for row in result["rows"]}
    assert len(rows) == 4 and result["positions"] == 40

    # the same fold's closed-form lens, scored by the lens comparison of the LOBO runner on the same positions
    from lenssample.analysis.lens_eval import compare_lenses
    from lenssample.data.windows import token_windows
    from lenssample.lens.base import LogitLens
    from lenssample.lens.train import train_tuned_lens

    train = token_windows(books["other"], tokenizer, seq_len=RECIPE.seq_len)
    start = train_tuned_lens(model, train, RECIPE, steps=0, progress=False)
    held_out = token_windows(books["long"], tokenizer, seq_len=RECIPE.seq_len)
    compared = compare_lenses(model, {"logit": LogitLens(model), "tuned": start}, held_out, max_positions=40)
    np.testing.assert_allclose(result["logit_kl"]["book"], [compared.metrics["logit"]["kl"][i] for i in (1, 2)],
                               rtol=1e-4)  # fmt: skip
    ratio = compared.kl_ratio("tuned")
    np.testing.assert_allclose(rows["closed-form start"]["book"], [ratio[1], ratio[2]], rtol=1e-4)
    # no step leaves the start as it is; four steps move it
    np.testing.assert_allclose(rows["0 steps x 8 positions, lr 0.001"]["book"], rows["closed-form start"]["book"])
    assert rows["4 steps x 8 positions, lr 0.01"]["book"] != rows["closed-form start"]["book"]
    table = (tmp_path / "ceiling_long.md").read_text()
    assert "| closed-form start (the recipe's) |" in table and "book L1 | book L2" in table
