"""Every mixing/contrast strategy on random and adversarial lens logits (no model): the output is a usable
distribution (no NaN, no +inf, never a row without an allowed token), normalised where it should be, and the
per-row decisions in ``info`` have one entry per row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategy_cases import ALL, NORMALISED

NUM_LAYERS = 4
VOCAB = 24


@st.composite
def lens_logits(draw, n_layers: int) -> torch.Tensor:
    """``[rows, n_layers, vocab]`` logits: random, then scaled huge or tiny, with -inf columns and ties."""
    rows = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, n_layers, VOCAB)).astype(np.float32)
    scale = draw(st.sampled_from([1.0, 30.0, 1e4, 1e30, 1e-30, 0.0]))
    logits = logits * np.float32(scale)
    shift = draw(st.sampled_from([0.0, 1e6, -1e6]))
    logits = logits + np.float32(shift)
    if draw(st.booleans()):  # ties: several tokens share the top logit in every layer
        logits[..., :3] = logits.max(axis=-1, keepdims=True)
    n_masked = draw(st.integers(0, VOCAB - 1))  # -inf columns; at least one finite token per (row, layer)
    if n_masked:
        columns = rng.choice(VOCAB, size=n_masked, replace=False)
        which = draw(st.sampled_from(["all", "mature", "premature"]))
        layer_slice = {"all": slice(None), "mature": slice(-1, None), "premature": slice(0, -1)}[which]
        logits[:, layer_slice, columns] = -np.inf
    return torch.from_numpy(logits)


@pytest.mark.parametrize("case", sorted(ALL))
def test_output_is_a_valid_distribution(case):
    strategy = ALL[case]
    layers = strategy.layers(NUM_LAYERS)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
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


def test_strategies_do_not_modify_their_input():
    logits = torch.randn(2, 5, VOCAB)
    for strategy in ALL.values():
        layers = strategy.layers(NUM_LAYERS)
        given_logits = logits[:, : len(layers)].clone()
        strategy(given_logits, layers)
        assert torch.equal(given_logits, logits[:, : len(layers)]), strategy
