"""lm-evaluation-harness: LensSampleLM runs a small local task through lm_eval.simple_evaluate, offline."""

from __future__ import annotations

import importlib.util
import json
import math
import textwrap

import pytest

from lenssample.eval.multiple_choice import score_continuations
from lenssample.eval.perplexity import perplexity
from lenssample.strategies.base import SingleLayer
from tests.conftest import make_tiny_model
from tests.eval_helpers import TEXT, CharTokenizer, one_thread  # noqa: F401

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="make setup installs lm-eval"),
]

DOCS = [
    {"question": "The sea is", "choices": ["blue", "loud", "made of cheese"], "gold": 0, "text": TEXT[:90]},
    {"question": "Ships pass at", "choices": ["night", "noon"], "gold": 0, "text": TEXT[90:]},
    {"question": "The lamp", "choices": ["burns", "sings", "waits"], "gold": 2, "text": TEXT[20:70]},
]


def write_tasks(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'docs.jsonl'}\ntest_split: test\n"
    (tmp_path / "tiny_mc.yaml").write_text(
        "task: tiny_mc\noutput_type: multiple_choice\n"
        + common
        + textwrap.dedent(
            """\
            doc_to_text: "{{question}}"
            doc_to_choice: "{{choices}}"
            doc_to_target: "{{gold}}"
            metric_list:
              - metric: acc
            """
        )
    )
    (tmp_path / "tiny_ppl.yaml").write_text(
        "task: tiny_ppl\noutput_type: loglikelihood_rolling\n"
        + common
        + 'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
    )
    (tmp_path / "tiny_gen.yaml").write_text(
        "task: tiny_gen\noutput_type: generate_until\n"
        + common
        + textwrap.dedent(
            """\
            doc_to_text: "{{question}}"
            doc_to_target: "{{choices[gold]}}"
            generation_kwargs:
              until: ["\\n"]
              max_gen_toks: 6
            metric_list:
              - metric: exact_match
            """
        )
    )


def test_simple_evaluate_with_a_local_task(tmp_path, monkeypatch):
    strategy = SingleLayer(layer=2)  # an intermediate layer: the harness must score through the strategy
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    from lenssample.integrations.lm_eval import LensSampleLM

    write_tasks(tmp_path)
    model, tok = make_tiny_model("llama"), CharTokenizer()
    lm = LensSampleLM(model, tok, strategy=strategy, max_length=32)
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=["tiny_mc", "tiny_ppl", "tiny_gen"],
        task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False),
        log_samples=True,
    )
    # accuracy equals lenssample's own multiple-choice scoring of the same continuations
    expected = []
    for doc in DOCS:
        sums = [
            s["sum"]
            for s in score_continuations(
                model, tok, doc["question"], [" " + c for c in doc["choices"]], strategy
            )
        ]
        expected.append(float(max(range(len(sums)), key=sums.__getitem__) == doc["gold"]))
    assert results["results"]["tiny_mc"]["acc,none"] == pytest.approx(sum(expected) / len(expected))
    # rolling log-likelihood of each document equals lenssample's perplexity on the same windows
    for sample in results["samples"]["tiny_ppl"]:
        text = sample["doc"]["text"]
        ids = tok.encode(text)
        ppl = perplexity(model, [ids], strategy, window=32, prefix_token_id=tok.bos_token_id)
        assert sample["resps"][0][0] == pytest.approx(-math.log(ppl.perplexity) * len(ids), rel=1e-5)
    assert math.isfinite(results["results"]["tiny_ppl"]["word_perplexity,none"])
    for sample in results["samples"]["tiny_gen"]:
        assert "\n" not in sample["resps"][0][0] and len(sample["resps"][0][0]) <= 6
