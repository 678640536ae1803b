"""Statistics of next-token distributions, with one convention for all of lenssample.

Every function takes log-probabilities (``log_softmax`` of logits, see :func:`log_probs`) over the last dimension
and broadcasts over the others. ``-inf`` is allowed wherever a probability is exactly 0.

The ``-inf`` convention: ``0 * log 0 = 0``, i.e. a token of probability 0 contributes nothing to a sum (``xlogy``).
So the entropy is always finite, ``KL(p || q)`` is finite unless ``q`` is 0 where ``p`` is not (then it is ``+inf``,
its true value), and the Jensen-Shannon divergence is always finite (the mixture is positive wherever either
distribution is). Divergences are clamped at 0 against float round-off. Entropy and divergences are in nats.
"""

from __future__ import annotations

import math

import torch

# Log-probabilities below this are treated as this where a contrast subtracts them (e^-10000 is 0 in float32
# anyway): flooring keeps an underflowed (-inf) premature probability from turning a difference into +inf.
LOG_PROB_FLOOR = -1.0e4


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last dimension, in float32 (or float64 for float64 input)."""
    return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)


def floored_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """:func:`log_probs` floored at :data:`LOG_PROB_FLOOR` (finite everywhere)."""
    return log_probs(logits).clamp_min(LOG_PROB_FLOOR)


def _plogp_terms(log_p: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``p * (log p - other)`` elementwise, 0 where ``p == 0`` (whatever ``other`` is)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - other), torch.zeros((), dtype=p.dtype, device=p.device))


def entropy(log_p: torch.Tensor) -> torch.Tensor:
    """``H(p) = -sum p log p``: ``[...]`` from ``[..., vocab]``."""
    return _plogp_terms(log_p, torch.zeros((), dtype=log_p.dtype, device=log_p.device)).sum(-1).neg()


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q) = sum p (log p - log q)``: ``[...]`` from broadcastable ``[..., vocab]`` inputs."""
    return _plogp_terms(log_p, log_q).sum(-1).clamp_min(0.0)


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``JSD(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``: ``[...]``, always finite."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
    return 0.5 * (_plogp_terms(log_p, log_m) + _plogp_terms(log_q, log_m)).sum(-1).clamp_min(0.0)


def token_rank(log_p: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """How many tokens are strictly likelier than ``token_ids`` (0 = the top token; ties count in its favour):
    ``[...]`` long, from ``log_p: [..., vocab]`` and ``token_ids`` broadcastable to ``log_p.shape[:-1]``."""
    token_ids = token_ids.expand(log_p.shape[:-1])
    chosen = log_p.gather(-1, token_ids[..., None])
    return (log_p > chosen).sum(-1)


def top_probability(log_p: torch.Tensor) -> torch.Tensor:
    """The largest probability: ``[...]``."""
    return log_p.max(dim=-1).values.exp()
