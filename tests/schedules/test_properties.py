"""The per-step combinations of the schedules on extreme inputs (no model): early exit's confidence measures and
speculative verification (greedy and rejection sampling) decide soundly from finite lens logits of any size, and
refuse NaN or +inf."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lenssample.schedules.confidence import Agreement, Entropy, Margin, MaxProb, Saturation
from lenssample.schedules.rejection import rejection_sample, verify_greedy
from lenssample.stats import entropy
from tests.strategy_cases import FIXED, VOCAB, lens_logits

MEASURES = [MaxProb(threshold=0.5), Margin(threshold=0.3), Entropy(threshold=1.0), Saturation(threshold=0.99),
            Agreement(count=2)]  # fmt: skip


@pytest.mark.parametrize("measure", MEASURES, ids=lambda m: m.name)
def test_confidence_measures_decide_soundly_on_extreme_layers(measure):
    @settings(FIXED, max_examples=40)
    @given(lens_logits(4))
    def check(logits):
        state: dict = {}
        decisions = []
        # The first row's layers, bottom up; hidden states as big as the logits (scaled: equal layers, cosine 1).
        for layer in range(4):
            log_probs = torch.log_softmax(logits[0, layer], dim=-1)
            hidden = logits[0, layer].clamp(-1e30, 1e30) * (1 + layer / 8)
            decisions.append(measure.step(log_probs, hidden, state))
            assert isinstance(decisions[-1], bool)
        top = torch.log_softmax(logits[0, -1], dim=-1)
        expected = {"max-prob": bool(top.max().exp() >= 0.5), "entropy": bool(entropy(top) <= 1.0)}
        if measure.name in expected:
            assert decisions[-1] == expected[measure.name]
        if torch.equal(logits[0, 2], logits[0, 3]) and measure.name in ("saturation", "agreement"):
            assert decisions[-1], "two identical layers in a row must agree (no overflow)"

    check()


@settings(FIXED, max_examples=60)
@given(lens_logits(3), lens_logits(1), st.data())
def test_verification_is_sound_on_extreme_distributions(logits, draft_logits, data):
    positions = logits.reshape(-1, VOCAB)  # at least 3
    k = data.draw(st.integers(1, len(positions) - 1))
    target = positions[
        : k + data.draw(st.integers(0, 1))
    ]  # with or without the position after the last draft
    drafts = torch.tensor(data.draw(st.lists(st.integers(0, VOCAB - 1), min_size=k, max_size=k)))
    greedy, tops = verify_greedy(drafts, target), target.argmax(-1)
    assert greedy.accepted == int((tops[:k] == drafts).long().cumprod(0).sum())
    assert greedy.next_token == (int(tops[greedy.accepted]) if greedy.accepted < len(target) else None)
    target_probs, draft_probs = target.softmax(-1), draft_logits[0, 0].softmax(-1).expand(k, VOCAB)
    drafts = torch.multinomial(draft_probs, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    verdict = rejection_sample(drafts, draft_probs, target_probs, generator=torch.Generator().manual_seed(1))
    assert 0 <= verdict.accepted <= k
    if verdict.next_token is not None:  # drawn from the residual or the target: a token the target allows
        assert target_probs[verdict.accepted, verdict.next_token] > 0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_verification_refuses_nan_and_inf(bad):
    target = torch.randn(3, VOCAB)
    target[1, 5] = bad
    drafts = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="verify_greedy's target_logits produced .*NaN"):
        verify_greedy(drafts, target)
    with pytest.raises(ValueError, match="rejection_sample's target_probs"):
        rejection_sample(drafts, torch.full((2, VOCAB), 1 / VOCAB), target.softmax(-1))
