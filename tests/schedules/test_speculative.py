"""Self-speculative decoding: lossless greedy, rejection sampling exactness, cache surgery safety."""

from __future__ import annotations

import pytest
import scipy.stats
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import lenssample
from lenssample.model.adapters import model_parts
from lenssample.schedules.rejection import rejection_sample, verify_greedy
from lenssample.schedules.speculative import LayerDraft, SelfSpeculative, SkipDraft, predicted_speedup
from tests.conftest import LAYERS, make_tiny_model

SPEC_ARCHS = ["llama", "gpt2", "qwen2", "phi3"]


def _prompt(seed: int, length: int = 6) -> torch.Tensor:
    return torch.randint(3, 90, (1, length), generator=torch.Generator().manual_seed(seed))


def _greedy(model, ids, **kw):
    return lenssample.generate(model, ids, max_new_tokens=14, eos_token_id=[], **kw)


# ------------------------------------------------------------------------------------------------ rejection, by hand
def _onehot_logits(tokens: list[int], vocab: int = 6) -> torch.Tensor:
    logits = torch.zeros(len(tokens), vocab)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 5.0
    return logits


def test_verify_greedy_draft_agrees_all_plus_bonus():
    verdict = verify_greedy(torch.tensor([1, 2, 3]), _onehot_logits([1, 2, 3, 4]))
    assert (verdict.accepted, verdict.next_token) == (3, 4)


def test_verify_greedy_all_agree_without_bonus_row():
    verdict = verify_greedy(torch.tensor([1, 2, 3]), _onehot_logits([1, 2, 3]))
    assert (verdict.accepted, verdict.next_token) == (3, None)


def test_verify_greedy_early_mismatch_emits_target_token():
    verdict = verify_greedy(torch.tensor([1, 5, 3]), _onehot_logits([1, 2, 3, 4]))
    assert (verdict.accepted, verdict.next_token) == (1, 2)
    verdict = verify_greedy(torch.tensor([0, 2, 3]), _onehot_logits([1, 2, 3, 4]))
    assert (verdict.accepted, verdict.next_token) == (0, 1)


def test_rejection_accepts_when_draft_equals_target_and_draws_bonus():
    probs = torch.softmax(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), -1)
    bonus = torch.zeros(1, 6)
    bonus[0, 4] = 1.0
    for seed in range(20):
        verdict = rejection_sample(
            torch.tensor([0, 1, 2]),
            probs,
            torch.cat([probs, bonus]),
            generator=torch.Generator().manual_seed(seed),
        )
        assert (verdict.accepted, verdict.next_token) == (3, 4)  # p/q = 1: always accepted; bonus is one-hot


def test_rejection_early_mismatch_recovers_from_residual():
    # The draft is sure of token 1, the target never produces it: rejected at once; the residual max(0, p - q)
    # is p itself here, and p puts all mass on token 3.
    q = torch.zeros(2, 6)
    q[:, 1] = 1.0
    p = torch.zeros(3, 6)
    p[:, 3] = 1.0
    verdict = rejection_sample(torch.tensor([1, 1]), q, p, generator=torch.Generator().manual_seed(0))
    assert (verdict.accepted, verdict.next_token) == (0, 3)


def test_rejection_sampling_reproduces_target_distribution():
    """Chi-square: the first emitted token (accepted draft or recovered) follows the target's p exactly."""
    gen = torch.Generator().manual_seed(1234)
    vocab, trials = 5, 6000
    p = torch.tensor([0.05, 0.4, 0.25, 0.2, 0.1])
    q = torch.tensor([0.3, 0.1, 0.3, 0.1, 0.2])  # a poor draft
    counts = torch.zeros(vocab)
    drafts = torch.multinomial(q, trials, replacement=True, generator=gen)
    for draft in drafts.tolist():
        verdict = rejection_sample(torch.tensor([draft]), q[None], p[None], generator=gen)
        token = draft if verdict.accepted == 1 else verdict.next_token
        counts[token] += 1
    stat = scipy.stats.chisquare(counts.numpy(), (p * trials).numpy())
    assert stat.pvalue > 0.001, (counts, stat)
    # And the test can fail: the draft's own distribution is rejected by the same statistic.
    assert scipy.stats.chisquare(counts.numpy(), (q * trials).numpy()).pvalue < 1e-6


# ----------------------------------------------------------------------------------------- lossless greedy decoding
@pytest.mark.parametrize("arch", SPEC_ARCHS)
def test_layer_draft_greedy_equals_final_layer_for_every_layer_and_k(arch):
    model = make_tiny_model(arch)
    for seed in (0, 1):
        ids = _prompt(seed)
        reference = _greedy(model, ids).sequences
        for layer in range(1, LAYERS):
            for k in range(1, 9) if seed == 0 else (2, 7):
                out = _greedy(model, ids, schedule=SelfSpeculative(draft=LayerDraft(layer=layer), k=k))
                assert torch.equal(out.sequences, reference), (arch, seed, layer, k)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_skip_draft_greedy_equals_final_layer(arch):
    model = make_tiny_model(arch)
    ids = _prompt(3)
    reference = _greedy(model, ids).sequences
    for skip in [(1,), (3,), (1, 2)]:
        for k in (1, 2, 4, 8):
            out = _greedy(model, ids, schedule=SelfSpeculative(draft=SkipDraft(skip=skip), k=k))
            assert torch.equal(out.sequences, reference), (arch, skip, k)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_batched_left_padded_equals_final_layer(arch):
    model = make_tiny_model(arch)
    ids = torch.randint(3, 90, (3, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[2, :1] = 0
    ids = ids.masked_fill(mask == 0, 0)
    reference = lenssample.generate(
        model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[]
    ).sequences
    for schedule in (
        SelfSpeculative(draft=LayerDraft(layer=2), k=3),
        SelfSpeculative(draft=SkipDraft(skip=(2,)), k=5),
    ):
        out = lenssample.generate(
            model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[], schedule=schedule
        )
        assert torch.equal(out.sequences, reference), schedule


def test_eos_stops_rows_and_pads_like_the_plain_loop():
    model = make_tiny_model("llama")
    ids = _prompt(0)
    plain = lenssample.generate(model, ids, max_new_tokens=14, eos_token_id=[]).new_tokens[0]
    eos = int(plain[5])  # a token the model really produces
    reference = lenssample.generate(model, ids, max_new_tokens=14, eos_token_id=eos, pad_token_id=0)
    out = lenssample.generate(
        model, ids, max_new_tokens=14, eos_token_id=eos, pad_token_id=0,
        schedule=SelfSpeculative(draft=LayerDraft(layer=3), k=4),
    )  # fmt: skip
    assert torch.equal(out.sequences, reference.sequences)


def test_trace_counts_are_consistent():
    model = make_tiny_model("llama")
    out = _greedy(model, _prompt(0), schedule=SelfSpeculative(draft=LayerDraft(layer=3), k=4))
    trace = out.trace
    assert trace.drafted == int(trace.info["drafted"].clamp_min(0).sum())
    assert trace.accepted == int(trace.info["accepted"].clamp_min(0).sum())
    assert sum(trace.accept_histogram) == int((trace.info["drafted"] > 0).sum())
    assert int(trace.info["emitted"].clamp_min(0).sum()) == out.new_tokens.shape[1]
    assert 0.0 <= trace.acceptance_rate <= 1.0
    assert set(trace.to_dict()) >= {"drafted", "accepted", "acceptance_rate", "accept_histogram"}


def test_adaptive_falls_back_to_plain_decoding_and_stays_lossless():
    model = make_tiny_model("llama")
    ids = _prompt(2)
    reference = _greedy(model, ids).sequences
    # A 1-layer draft of a random model is rarely right: the cost model must stop drafting.
    out = _greedy(
        model, ids, schedule=SelfSpeculative(draft=LayerDraft(layer=3), adaptive=True, prior_acceptance=0.0)
    )
    assert torch.equal(out.sequences, reference)
    assert out.trace.plain_steps >= 10 and out.trace.drafted <= 2


def test_cost_model():
    # accepting nothing never pays; accepting everything with a cheap draft does
    assert predicted_speedup(LayerDraft(layer=10), 0.0, 4, 30, 2.0) < 1.0
    assert predicted_speedup(LayerDraft(layer=10), 1.0, 4, 30, 2.0) > 1.5
    assert (
        predicted_speedup(SkipDraft(skip=(5,)), 0.6, 4, 30, 2.0) < 1.0
    )  # 29-block drafts need near-perfect drafts


class _Boom(LogitsProcessor):
    def __init__(self, after: int) -> None:
        self.calls, self.after = 0, after

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == self.after:
            raise RuntimeError("boom")
        return scores


@pytest.mark.parametrize("draft", [LayerDraft(layer=2), SkipDraft(skip=(1, 2))])
def test_model_intact_after_exception_mid_cycle(draft):
    model = make_tiny_model("llama")
    blocks = list(model_parts(model).blocks)
    ids = _prompt(0)
    reference = _greedy(model, ids).sequences
    # The 6th processor call is inside a verify pass (layer draft) or a draft step (skip draft).
    with pytest.raises(RuntimeError, match="boom"):
        _greedy(
            model,
            ids,
            logits_processor=LogitsProcessorList([_Boom(6)]),
            schedule=SelfSpeculative(draft=draft, k=4),
        )
    assert list(model_parts(model).blocks) == blocks
    assert torch.equal(_greedy(model, ids).sequences, reference)


def test_bad_input():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="LayerDraft"):
        _greedy(model, _prompt(0), schedule=SelfSpeculative(draft=LayerDraft(layer=LAYERS)))
    with pytest.raises(ValueError, match="block 0"):
        _greedy(model, _prompt(0), schedule=SelfSpeculative(draft=SkipDraft(skip=(0,))))
    with pytest.raises(ValueError, match="k=0"):
        SelfSpeculative(draft=LayerDraft(layer=2), k=0)
    with pytest.raises(TypeError, match="draft must be"):
        SelfSpeculative(draft=2)
    with pytest.raises(ValueError, match="drop strategy"):
        _greedy(
            model,
            _prompt(0),
            strategy=lenssample.SingleLayer(layer=2),
            schedule=SelfSpeculative(draft=LayerDraft(layer=2)),
        )
    with pytest.raises(ValueError, match="draft_layer"):
        _greedy(model, _prompt(0), schedule="speculative")
    with pytest.raises(TypeError, match="schedule must be"):
        _greedy(model, _prompt(0), schedule=3)


def test_sampling_runs_and_is_reproducible():
    model = make_tiny_model("llama")
    schedule = SelfSpeculative(draft=LayerDraft(layer=2), k=3)
    a = lenssample.generate(model, _prompt(0), max_new_tokens=10, do_sample=True, seed=7, schedule=schedule)
    b = lenssample.generate(model, _prompt(0), max_new_tokens=10, do_sample=True, seed=7, schedule=schedule)
    assert torch.equal(a.sequences, b.sequences)
    assert a.trace.drafted > 0


# ---------------------------------------------------------------------------------------------------- real model
@pytest.mark.real
@pytest.mark.parametrize("layer", [6, 15, 24, 28])
def test_real_model_layer_draft_lossless_every_k(real_model, layer):
    model, tokenizer = real_model
    prompt = "The capital of France is"
    reference = lenssample.generate(model, prompt, tokenizer=tokenizer, max_new_tokens=6, eos_token_id=[])
    for k in range(1, 9):
        out = lenssample.generate(
            model, prompt, tokenizer=tokenizer, max_new_tokens=6, eos_token_id=[],
            schedule=SelfSpeculative(draft=LayerDraft(layer=layer), k=k),
        )  # fmt: skip
        assert torch.equal(out.sequences, reference.sequences), (layer, k)


@pytest.mark.real
def test_real_model_batched_lossless(real_model):
    model, tokenizer = real_model
    prompts = ["def fibonacci(n):", "Once upon a time, in a small village,"]
    reference = lenssample.generate(model, prompts, tokenizer=tokenizer, max_new_tokens=8, eos_token_id=[])
    out = lenssample.generate(
        model, prompts, tokenizer=tokenizer, max_new_tokens=8, eos_token_id=[],
        schedule=SelfSpeculative(draft=LayerDraft(layer=20), k=4),
    )  # fmt: skip
    assert torch.equal(out.sequences, reference.sequences)


@pytest.mark.real
def test_real_model_skip_draft_lossless(real_model):
    model, tokenizer = real_model
    prompt = "Once upon a time, there was a"
    reference = lenssample.generate(model, prompt, tokenizer=tokenizer, max_new_tokens=6, eos_token_id=[])
    for k in (1, 3, 8):
        out = lenssample.generate(
            model, prompt, tokenizer=tokenizer, max_new_tokens=6, eos_token_id=[],
            schedule=SelfSpeculative(draft=SkipDraft(skip=(15,)), k=k),
        )  # fmt: skip
        assert torch.equal(out.sequences, reference.sequences), k


def test_search_picks_a_paying_draft_or_falls_back():
    from lenssample.schedules.search import choose_self_speculative

    model = make_tiny_model("llama")
    ids = _greedy(model, _prompt(0)).sequences
    choice = choose_self_speculative(model, ids, layers=[1, 2, 3], skips=[(1,), (2, 3)])
    assert len(choice.table) == 5 and all(0.0 <= row["acceptance"] <= 1.0 for row in choice.table)
    assert choice.predicted_speedup == max(row["predicted_speedup"] for row in choice.table)
    assert (choice.schedule is None) == (choice.predicted_speedup <= 1.0)
    # A lens cost larger than the whole model means no draft can pay: plain decoding.
    assert choose_self_speculative(model, ids, layers=[3], skips=[], lens_cost=100.0).schedule is None
