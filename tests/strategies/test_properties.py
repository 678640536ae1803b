"""Every mixing/contrast strategy on random and adversarial lens logits (no model): from finite inputs of any
magnitude the output is a usable distribution (no NaN, no +inf, never a row without an allowed token), normalised
where it should be, and the per-row decisions in ``info`` have one entry per row; a layer holding NaN or +inf is
refused with an error naming the strategy and the layer."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategy_cases import ALL, FIXED, NORMALISED, VOCAB, lens_logits

NUM_LAYERS = 4


@pytest.mark.parametrize("case", sorted(ALL))
def test_output_is_a_valid_distribution(case):
    strategy = ALL[case]
    layers = strategy.layers(NUM_LAYERS)

    @settings(FIXED, max_examples=40)
    @given(lens_logits(len(layers)))
    def check(logits):
        out = strategy(logits.clone(), layers)
        result = out.logits
        assert result.shape == (logits.shape[0], VOCAB)
        assert result.dtype == torch.float32
        assert not torch.isnan(result).any(), f"NaN from {strategy}"
        assert not (result == math.inf).any(), f"+inf from {strategy}"
        assert torch.isfinite(result).any(dim=-1).all(), f"a row with no allowed token from {strategy}"
        log_probs = torch.log_softmax(result, dim=-1)
        assert not torch.isnan(log_probs).any()
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(len(result)), atol=1e-4, rtol=0)
        if case in NORMALISED:
            torch.testing.assert_close(result.logsumexp(-1), torch.zeros(len(result)), atol=1e-4, rtol=0)
        # The mature layer's top token is always allowed (plausibility sets keep it; SLED evolves it).
        if case.startswith(("dola", "contrast", "acd", "sled")):
            top = logits[:, -1].argmax(-1)
            assert torch.isfinite(result.gather(-1, top[:, None])).all()
        for key, value in out.info.items():
            assert value.shape == (logits.shape[0],), key

    check()


@pytest.mark.parametrize("case", sorted(ALL))
def test_nan_or_inf_in_a_layer_is_refused_naming_the_strategy_and_layer(case):
    strategy = ALL[case]
    layers = strategy.layers(NUM_LAYERS)

    @settings(FIXED, max_examples=10)
    @given(lens_logits(len(layers)), st.data())
    def check(logits, data):
        index = data.draw(st.integers(0, len(layers) - 1))
        bad = data.draw(st.sampled_from([math.nan, math.inf, "row of -inf"]))
        row, token = data.draw(st.integers(0, len(logits) - 1)), data.draw(st.integers(0, VOCAB - 1))
        if bad == "row of -inf":
            logits[row, index] = -math.inf
        else:
            logits[row, index, token] = bad
        with pytest.raises(ValueError, match=rf"strategy '{strategy.name}'.* layer {layers[index]} hold NaN"):
            strategy(logits, layers)

    check()


def test_strategies_do_not_modify_their_input():
    logits = torch.randn(2, 5, VOCAB)
    for strategy in ALL.values():
        layers = strategy.layers(NUM_LAYERS)
        given_logits = logits[:, : len(layers)].clone()
        strategy(given_logits, layers)
        assert torch.equal(given_logits, logits[:, : len(layers)]), strategy
