"""Contrast with an earlier layer of the same model: the logit contrast of O'Brien & Lewis and auto-contrastive
decoding.

Terms: the *mature* (expert) layer is ``L``; the *amateur* is an earlier layer read through the lens.

* :class:`LayerContrast` (O'Brien & Lewis 2023, arXiv 2309.09117), the amateur being an early exit instead of a
  smaller model;
* :class:`AutoContrastive` (Gera et al. 2023, arXiv 2305.01628).

Both work on log-probabilities: a layer's logits and log-probs differ by a per-row constant, which the
softmax of ``(1 + beta) s_m - beta s_a`` does not see, and log-probs keep huge logits from overflowing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lenssample.stats import LOG_PROB_FLOOR, floored_log_probs, log_probs
from lenssample.strategies.base import Strategy, StrategyOutput, register_strategy
from lenssample.strategies.fields import (
    check_alpha,
    check_layer,
    check_plausibility,
    masked_scores,
    plausible,
    premature_and_mature,
)
from lenssample.validation import check_number


@dataclass(frozen=True, kw_only=True)
class _AmateurContrast(Strategy):
    """Base of the two: reads ``(amateur, L)``, ``amateur_layer`` being the earlier layer (``< L``; negative counts
    from the end; ``None``: ``L // 2``)."""

    amateur_layer: int | None = None

    def __post_init__(self) -> None:
        check_layer(self.amateur_layer, field="amateur_layer", owner=self.name, optional=True)

    def layers(self, num_layers: int) -> tuple[int, ...]:
        if self.amateur_layer is None:
            return (num_layers // 2, num_layers)
        return premature_and_mature(self, "amateur_layer", num_layers)

    def _log_probs(self, lens_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mature, amateur)`` log-probabilities, ``[rows, vocab]`` each (the amateur's floored)."""
        return log_probs(lens_logits[:, -1]), floored_log_probs(lens_logits[:, 0])


@register_strategy
@dataclass(frozen=True, kw_only=True)
class LayerContrast(_AmateurContrast):
    """``(1 + beta) * log q_L - beta * log q_amateur`` inside the plausibility set ``{x: q_L(x) >= alpha * max q_L}``,
    ``excluded_logit`` outside.

    Args:
        beta: contrast strength ``>= 0`` (0: the mature layer; O'Brien & Lewis use 0.5).
        alpha: plausibility cut-off in ``(0, 1]``, or ``None`` for no cut-off.
        excluded_logit: score outside the plausibility set (``-inf``; e.g. ``-1000`` for scoring).
    """

    name: ClassVar[str] = "contrast"
    beta: float = 0.5
    alpha: float | None = 0.1
    excluded_logit: float = -math.inf

    def __post_init__(self) -> None:
        super().__post_init__()
        fix = "Use beta >= 0 (0 = no contrast)."
        check_number(self.beta, field="beta", owner=self.name, low=0.0, fix=fix)
        check_plausibility(self, optional_alpha=True)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        mature, amateur = self._log_probs(lens_logits)
        scores = (1 + self.beta) * mature - self.beta * amateur if self.beta else mature
        keep = torch.ones_like(scores, dtype=torch.bool)
        keep = keep if self.alpha is None else plausible(mature, self.alpha)
        return StrategyOutput(logits=masked_scores(scores, keep, self.excluded_logit))


@register_strategy
@dataclass(frozen=True, kw_only=True)
class AutoContrastive(_AmateurContrast):
    """Auto-contrastive decoding: contrast inside the head set, head mass kept, tail untouched.

    ``log p(x) = log sum_{V_head} q_L + log_softmax_{V_head}(log q_L - log q_amateur)(x)`` for ``x`` in the head,
    ``log q_L(x)`` in the tail. The output is normalised; ``alpha = 1`` (a head of the top token) is the mature layer.

    Args:
        alpha: head cut-off in ``(0, 1]`` (Gera et al. use 0.1).
    """

    name: ClassVar[str] = "acd"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha(self.alpha, owner=self.name)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        mature, amateur = self._log_probs(lens_logits)
        head = plausible(mature, self.alpha)
        head_mass = torch.logsumexp(mature.masked_fill(~head, -math.inf), dim=-1, keepdim=True)
        contrast = masked_scores(mature.clamp_min(LOG_PROB_FLOOR) - amateur, head, -math.inf)
        redistributed = head_mass + torch.log_softmax(contrast, dim=-1)
        return StrategyOutput(logits=torch.where(head, redistributed, mature))
