"""Perplexity: windows follow lm-eval's rolling semantics; FinalLayer perplexity is the model's own loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lenssample.eval.perplexity import (
    aggregate,
    corpus_windows,
    perplexity,
    rolling_windows,
    window_records,
)
from lenssample.strategies.base import FinalLayer, SingleLayer, Strategy, StrategyOutput
from tests.conftest import make_tiny_model
from tests.eval_helpers import TEXT, CharTokenizer, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

P = 99


def test_windows_match_the_docstring_worked_example():
    tokens = list(range(10))  # t0..t9
    w = rolling_windows(tokens, window=4, stride=2, prefix_token_id=P)
    assert [x.input_ids for x in w] == [(P, 0, 1, 2), (1, 2, 3, 4), (3, 4, 5, 6), (5, 6, 7, 8)]
    assert [x.target_ids for x in w] == [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (6, 7, 8, 9)]
    assert [x.num_scored for x in w] == [4, 2, 2, 2]
    disjoint = rolling_windows(tokens, window=4, prefix_token_id=P)  # lm-eval's loglikelihood_rolling
    assert [x.input_ids for x in disjoint] == [(P, 0, 1, 2), (3, 4, 5, 6), (5, 6, 7, 8)]
    assert [x.num_scored for x in disjoint] == [4, 4, 2]


@pytest.mark.parametrize(
    "length,window,stride,prefix", [(1, 3, 1, P), (7, 3, 2, None), (50, 8, 3, P), (9, 9, 9, P)]
)
def test_every_token_scored_once_with_context_at_most_window(length, window, stride, prefix):
    tokens = list(range(100, 100 + length))
    scored = []
    for w in rolling_windows(tokens, window=window, stride=stride, prefix_token_id=prefix):
        assert len(w.input_ids) <= window and len(w.input_ids) == len(w.target_ids)
        scored.extend(w.target_ids[len(w.target_ids) - w.num_scored :])
        # the targets are the inputs shifted by one in the document
        seq = ([prefix] if prefix is not None else []) + tokens
        assert list(w.input_ids[1:]) == list(w.target_ids[:-1])
        assert w.target_ids[-w.num_scored] == seq[w.first_scored + (1 if prefix is not None else 0)]
    assert scored == (tokens if prefix is not None else tokens[1:])


@pytest.mark.parametrize("stride", [2, 4])
def test_a_leading_token_starts_every_window_as_context_only(stride):
    # Gemma's predictions collapse without its BOS at position 0: every window must start with it, unscored.
    tokens = list(range(10))
    plain = rolling_windows(tokens, window=4, stride=stride, prefix_token_id=P)
    led = rolling_windows(tokens, window=4, stride=stride, prefix_token_id=P, leading_token_id=P)
    assert all(w.input_ids[0] == P for w in led)
    assert led[0] == plain[0]  # the document's first window already starts with it: unchanged
    for a, b in zip(plain[1:], led[1:], strict=True):
        assert b.input_ids == (P, *a.input_ids) and b.target_ids == (a.input_ids[0], *a.target_ids)
        assert (b.num_scored, b.first_scored) == (a.num_scored, a.first_scored)
        assert b.target_ids[-b.num_scored :] == a.target_ids[-a.num_scored :]  # the same tokens scored


def test_the_harness_gives_gemma_its_bos_in_every_window():
    from lenssample.eval.tasks import Context

    class Tok:
        bos_token_id = 2

        def __init__(self, adds: bool) -> None:
            self.adds = adds

        def __call__(self, text):
            return {"input_ids": [2, 7] if self.adds else [7]}

    assert Context(model=None, tokenizer=Tok(adds=True)).leading_token_id == 2
    assert Context(model=None, tokenizer=Tok(adds=False)).leading_token_id is None


def _model_loss_perplexity(model, windows):
    nll, count = 0.0, 0
    for w in windows:
        logits = model(torch.tensor([w.input_ids])).logits[0].float()
        losses = F.cross_entropy(logits, torch.tensor(w.target_ids), reduction="none")
        nll += losses[-w.num_scored :].double().sum().item()
        count += w.num_scored
    return math.exp(nll / count)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_final_layer_perplexity_is_exp_of_model_loss(arch):
    model = make_tiny_model(arch)
    tok = CharTokenizer()
    docs = [tok.encode(TEXT), tok.encode(TEXT[40:120])]
    windows = corpus_windows(docs, window=24, stride=10, prefix_token_id=1)
    result = perplexity(
        model, docs, FinalLayer(), window=24, stride=10, prefix_token_id=1, tokenizer=tok, batch_size=3
    )
    expected = _model_loss_perplexity(model, windows)
    assert result.tokens == len(docs[0]) + len(docs[1])
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    assert result.excluded_fraction == 0 and result.perplexity_kept == pytest.approx(result.perplexity)
    assert result.bits_per_byte == pytest.approx(
        math.log(result.perplexity) * result.tokens / result.bytes / math.log(2)
    )


def test_batching_and_chunking_do_not_change_the_records():
    model = make_tiny_model("qwen2")
    tok = CharTokenizer()
    windows = corpus_windows([tok.encode(TEXT)], window=16, stride=5, prefix_token_id=1)
    one = window_records(model, windows, SingleLayer(layer=2), batch_size=1)
    many = window_records(model, windows, SingleLayer(layer=2), batch_size=7)
    for a, b in zip(one, many):
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5, abs=1e-5) and a["tokens"] == b["tokens"]


class ExcludeOdd(Strategy):
    """A test strategy that puts -inf on every odd token id (a plausibility cut-off in miniature)."""

    name = "test-exclude-odd"

    def layers(self, num_layers):
        return (num_layers,)

    def __call__(self, lens_logits, layers):
        logits = lens_logits[:, -1].clone()
        logits[:, 1::2] = float("-inf")
        return StrategyOutput(logits=logits)


def test_excluded_tokens_are_counted_and_floored_never_inf():
    model = make_tiny_model("llama")
    tok = CharTokenizer()
    ids = tok.encode(TEXT)
    result = perplexity(model, [ids], ExcludeOdd(), window=32, prefix_token_id=1, floor_log_prob=-20.0)
    odd = sum(1 for t in ids if t % 2 == 1)
    assert result.excluded_tokens == odd and result.excluded_fraction == pytest.approx(odd / len(ids))
    assert math.isfinite(result.perplexity) and math.isfinite(result.perplexity_kept)
    assert result.perplexity > result.perplexity_kept
    # the floored NLL is the finite NLL plus 20 nats per excluded token
    finite_nll = math.log(result.perplexity_kept) * (len(ids) - odd)
    assert result.nll_per_token * len(ids) == pytest.approx(finite_nll + 20.0 * odd, rel=1e-6)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="stride=8 is larger than window=4"):
        rolling_windows([1, 2, 3], window=4, stride=8)
    with pytest.raises(ValueError, match="window=0"):
        rolling_windows([1, 2, 3], window=0)
    with pytest.raises(ValueError, match="no token to score"):
        corpus_windows([[], [5]], window=4)
    with pytest.raises(ValueError, match="no token was scored"):
        aggregate([])
    with pytest.raises(ValueError, match="floor_log_prob"):
        perplexity(
            make_tiny_model("llama"), [[3, 4, 5]], FinalLayer(), window=4, floor_log_prob=float("-inf")
        )


@pytest.mark.real
def test_real_model_final_layer_perplexity_is_exp_of_model_loss(real_model):
    from lenssample.data import wikipedia

    model, tok = real_model
    ids = tok.encode(wikipedia("heldout")[0].text[:1500], add_special_tokens=False)[:160]
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    windows = corpus_windows([ids], window=64, stride=32, prefix_token_id=prefix)
    result = perplexity(
        model, [ids], FinalLayer(), window=64, stride=32, prefix_token_id=prefix, tokenizer=tok
    )
    assert result.tokens == len(ids)
    assert result.perplexity == pytest.approx(_model_loss_perplexity(model, windows), rel=1e-4)
    assert 1.0 < result.perplexity < 200 and 0.3 < result.bits_per_byte < 3


def test_multiple_choice_and_generation_items_start_with_a_leading_bos():
    from lenssample.data.sets import GenerationItem
    from lenssample.data.windows import leading_token_ids
    from lenssample.eval.generation import evaluate_item
    from lenssample.eval.multiple_choice import score_continuations

    model = make_tiny_model("llama")
    seen = []
    model.model.register_forward_pre_hook(  # the base model: scoring and the decoding loop both run it
        lambda module, args, kwargs: seen.append(kwargs.get("input_ids", args[0] if args else None)), with_kwargs=True
    )

    class BosTokenizer(CharTokenizer):  # puts its BOS first by default, as Gemma's does
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [self.bos_token_id] * add_special_tokens + self.encode(text)}

    tokenizer = BosTokenizer()
    assert leading_token_ids(tokenizer) == [tokenizer.bos_token_id] and leading_token_ids(CharTokenizer()) == []
    score_continuations(model, tokenizer, "ab", ["c", "d"], FinalLayer())
    first = tokenizer.encode("ab")[0]
    assert all(row[:2].tolist() == [tokenizer.bos_token_id, first] for row in seen[-1])
    seen.clear()
    evaluate_item(model, tokenizer, GenerationItem(id="q", prompt="ab"), FinalLayer(), max_new_tokens=1)
    assert seen[0][0, :2].tolist() == [tokenizer.bos_token_id, first]
