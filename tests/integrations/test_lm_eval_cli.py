"""lm-eval's own command line running the ``lenssample`` model on the local task shipped in
``examples/lm_eval_task``: the ``lm_eval`` command itself (registered by the start-up hook that lenssample installs,
``_lenssample_lm_eval``) and ``lenssample-lm-eval`` (``lm_eval.__main__.cli_evaluate`` with the model registered
explicitly). The default model, so these are marked ``real``; the hook's own tests need no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LM_EVAL = Path(sys.executable).with_name("lm_eval")


def _run_lm_eval(monkeypatch, argv: list[str]) -> None:
    import lenssample.integrations.lm_eval_cli as cli

    monkeypatch.chdir(ROOT)  # the task's data_files path is relative to the repository root
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["lenssample-lm-eval", *argv])
    cli.main()


@pytest.mark.real
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


@pytest.mark.real
def test_a_bad_strategy_is_refused_before_the_model_loads(monkeypatch):
    with pytest.raises(ValueError, match="(?i)did you mean 'dola'"):
        _run_lm_eval(monkeypatch, [
            "--model", "lenssample", "--model_args", "strategy=dolla", "--tasks", "capitals_mc",
            "--include_path", "examples/lm_eval_task", "--limit", "1",
        ])  # fmt: skip


def _fresh_python(code: str, **env: str) -> list[str]:
    """Runs ``code`` in a new interpreter of this environment (so its ``.pth`` start-up files run); its output lines."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                         env={**os.environ, **env}, check=True)  # fmt: skip
    return run.stdout.split()


def test_the_start_up_hook_is_installed_and_imports_nothing_heavy():
    loaded = _fresh_python("import sys; print(*(m in sys.modules for m in "
                           "('_lenssample_lm_eval', 'lenssample', 'torch', 'lm_eval')))")  # fmt: skip
    assert loaded == ["True", "False", "False", "False"], (
        "lenssample-lm-eval.pth is missing from site-packages (reinstall: make setup) or imports too much"
    )


def test_lm_evals_registry_lists_lenssample_lazily_beside_its_own_models():
    listed = """
import sys
from lm_eval.api.registry import get_model, model_registry
print(get_model("hf").__name__, "lenssample" in model_registry, "lenssample" in sys.modules)
"""
    assert _fresh_python(listed) == ["HFLM", "True", "False"]  # listed, not imported until asked for
    assert _fresh_python(listed, LENSSAMPLE_LM_EVAL_HOOK="0") == ["HFLM", "False", "False"]
    chosen = "from lm_eval.api.registry import get_model; print(get_model('lenssample').__module__)"
    assert _fresh_python(chosen) == ["lenssample.integrations.lm_eval_cli"]


@pytest.mark.real
@pytest.mark.skipif(not LM_EVAL.exists(), reason="lm-eval's command is not installed (make setup installs it)")
def test_the_lm_eval_command_itself_runs_model_lenssample(tmp_path):
    run = subprocess.run([
        str(LM_EVAL), "--model", "lenssample", "--model_args", "strategy=dola:layers=[20,28],max_length=64",
        "--tasks", "capitals_mc", "--include_path", "examples/lm_eval_task", "--limit", "2",
        "--output_path", str(tmp_path),
    ], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "lenssample"
    assert results["config"]["model_args"]["strategy"] == "dola:layers=[20,28]"
    assert 0.0 <= results["results"]["capitals_mc"]["acc,none"] <= 1.0


@pytest.mark.slow
def test_a_regular_wheel_carries_the_start_up_hook(tmp_path):
    """setup.py's build_py adds lenssample-lm-eval.pth beside the hook module (editable installs: the test above)."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "evals", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheels")], check=True, capture_output=True)  # fmt: skip
    (wheel,) = (tmp_path / "wheels").glob("lenssample-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("lenssample-lm-eval.pth") == b"import _lenssample_lm_eval\n"
        assert "_lenssample_lm_eval.py" in archive.namelist()
