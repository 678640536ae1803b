"""lm-eval's own command line (``lm_eval.__main__.cli_evaluate``) running the ``lenssample`` model on the local
task shipped in ``examples/lm_eval_task`` (the default model, so it is marked ``real``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[2]


def _run_lm_eval(monkeypatch, argv: list[str]) -> None:
    import lenssample.integrations.lm_eval_cli as cli

    monkeypatch.chdir(ROOT)  # the task's data_files path is relative to the repository root
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["lenssample-lm-eval", *argv])
    cli.main()


def test_lm_eval_cli_runs_a_lenssample_strategy_on_a_local_task(monkeypatch, tmp_path, real_model):
    _run_lm_eval(monkeypatch, [
        "--model", "lenssample", "--model_args", "strategy=dola:layers=[20,28],max_length=64",
        "--tasks", "capitals_mc", "--include_path", "examples/lm_eval_task", "--limit", "2",
        "--output_path", str(tmp_path),
    ])  # fmt: skip
    written = list(tmp_path.rglob("results_*.json"))
    assert written, "lm-eval wrote no results file"
    results = json.loads(written[0].read_text())
    assert results["config"]["model"] == "lenssample"
    assert 0.0 <= results["results"]["capitals_mc"]["acc,none"] <= 1.0


def test_a_bad_strategy_is_refused_before_the_model_loads(monkeypatch):
    with pytest.raises(ValueError, match="(?i)did you mean 'dola'"):
        _run_lm_eval(monkeypatch, [
            "--model", "lenssample", "--model_args", "strategy=dolla", "--tasks", "capitals_mc",
            "--include_path", "examples/lm_eval_task", "--limit", "1",
        ])  # fmt: skip
