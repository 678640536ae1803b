"""``lenssample eval`` and ``lenssample bench`` through main([...])."""

from __future__ import annotations

import json

import pytest

from lenssample.cli import main
from tests.eval.test_runs import config_text, write_inputs
from tests.eval_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eval_command_runs_a_sweep_and_resumes(tmp_path, capsys):
    write_inputs(tmp_path)
    path = tmp_path / "sweep.toml"
    path.write_text(config_text(tmp_path, tmp_path / "out"))
    assert main(["eval", str(path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "### ppl (perplexity)" in printed and "`layer:layer=2`" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert main(["eval", str(path), "--no-progress"]) == 0  # everything recorded: nothing recomputed
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_eval_command_bad_input_exits_2(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path = tmp_path / "bad.toml"
    path.write_text('strategies = ["final", "layr:layer=2"]\n[[tasks]]\nkind = "perplexity"\n')
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'layer'" in err and len(err.strip().splitlines()) == 1
    path.write_text('strategies = ["final"]\n[[tasks]]\nkind = "perplexity"\nwindow = 8\nstride = 9\n')
    assert main(["eval", str(path)]) == 2
    assert "stride=9 is larger than window=8" in capsys.readouterr().err


def test_bench_command_bad_input_exits_2(capsys):
    assert main(["bench", "--strategies", "final,layr:layer=3"]) == 2
    assert "Did you mean 'layer'" in capsys.readouterr().err
    assert main(["bench", "--new-tokens", "1"]) == 2
    assert "--new-tokens 1" in capsys.readouterr().err


@pytest.mark.real
def test_bench_command_on_the_real_model(real_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--strategies", "final,layer:layer=24", "--new-tokens", "3", "--repeats", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"hf_generate", "final", "layer:layer=24"}
    assert result["variants"]["layer:layer=24"]["blocks_per_token"] == 24
    assert "x final" in capsys.readouterr().out
