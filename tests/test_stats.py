"""The statistics module against scipy, and its ``-inf`` convention (``0 log 0 = 0``) on the cases that break naive
formulas: zero probabilities, disjoint supports, one-hot distributions, extreme logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from lenssample.stats import (
    LOG_PROB_FLOOR,
    entropy,
    floored_log_probs,
    js_divergence,
    kl_divergence,
    log_probs,
    token_rank,
    top_probability,
)


def _random_log_probs(shape, seed, zeros=0):
    logits = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3
    if zeros:
        logits[..., :zeros] = -math.inf
    return log_probs(logits)


@pytest.mark.parametrize("zeros", [0, 3])
def test_against_scipy(zeros):
    log_p, log_q = _random_log_probs((5, 11), 0, zeros), _random_log_probs((5, 11), 1)
    p, q = log_p.exp().numpy(), log_q.exp().numpy()
    np.testing.assert_allclose(entropy(log_p).numpy(), scipy_entropy(p, axis=-1), rtol=1e-10)
    np.testing.assert_allclose(kl_divergence(log_p, log_q).numpy(), scipy_entropy(p, q, axis=-1), rtol=1e-10)
    np.testing.assert_allclose(
        js_divergence(log_p, log_q).numpy(), jensenshannon(p, q, axis=-1) ** 2, rtol=1e-9
    )
    np.testing.assert_allclose(js_divergence(log_q, log_p).numpy(), js_divergence(log_p, log_q).numpy())


def test_minus_inf_convention():
    one_hot = torch.tensor([0.0, -math.inf, -math.inf])
    other = torch.tensor([-math.inf, 0.0, -math.inf])
    assert entropy(one_hot) == 0
    assert kl_divergence(one_hot, one_hot) == 0
    assert kl_divergence(one_hot, other) == math.inf  # q is 0 where p is not: the true value
    assert kl_divergence(other[[1, 0, 2]], one_hot) == 0  # the same one-hot, written twice
    assert torch.isclose(js_divergence(one_hot, other), torch.tensor(math.log(2.0)))  # disjoint: the maximum
    uniform = log_probs(torch.zeros(4))
    assert torch.isclose(entropy(uniform), torch.tensor(math.log(4.0)))


def test_extreme_logits_stay_finite_and_proper():
    logits = torch.tensor([[1e30, -1e30, 0.0], [3e38, 3e38, -3e38], [0.0, 0.0, 0.0]])
    lp = log_probs(logits)
    assert torch.isfinite(lp.logsumexp(-1)).all() and torch.allclose(lp.logsumexp(-1), torch.zeros(3))
    assert torch.isfinite(entropy(lp)).all() and (entropy(lp) >= 0).all()
    assert torch.isfinite(js_divergence(lp, lp.flip(0))).all()
    floored = floored_log_probs(logits)
    assert floored.min() == LOG_PROB_FLOOR and torch.isfinite(floored).all()
    assert log_probs(torch.zeros(2, dtype=torch.float16)).dtype == torch.float32


def test_divergences_broadcast_and_are_nonnegative():
    log_p = _random_log_probs((4, 1, 9), 2)
    log_q = _random_log_probs((1, 3, 9), 3)
    assert kl_divergence(log_p, log_q).shape == (4, 3)
    assert (js_divergence(log_p, log_q) >= 0).all()
    assert (kl_divergence(log_p, log_p) == 0).all()  # round-off never makes it negative


def test_rank_and_top_probability():
    lp = log_probs(torch.tensor([[2.0, 5.0, 5.0, -1.0]]))
    assert token_rank(lp, torch.tensor([1])).tolist() == [0]
    assert token_rank(lp, torch.tensor([2])).tolist() == [0]  # ties count in the token's favour
    assert token_rank(lp, torch.tensor([0])).tolist() == [2]
    assert token_rank(lp, torch.tensor([3])).tolist() == [3]
    assert torch.isclose(top_probability(lp), lp.exp().max(-1).values).all()
