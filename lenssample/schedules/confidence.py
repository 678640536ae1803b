"""Confidence measures of early exit: after a block, should this token stop here?

A measure looks at the lens distribution of the new position at the current layer (``log_probs: [vocab]``) and/or
its residual stream (``hidden: [d_model]``), and at what it recorded at the layers below in ``state`` (a dict the
measure owns for one pass). Measures are registered like strategies: ``early-exit:measure=margin,threshold=0.3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lenssample.specs import Registry, Spec
from lenssample.stats import entropy
from lenssample.validation import check_int, check_number

MEASURES = Registry("measure")
"""Every confidence measure by name."""


@dataclass(frozen=True, kw_only=True)
class Confidence(Spec):
    """Base class of confidence measures."""

    registry: ClassVar[Registry] = MEASURES
    # Whether `step` reads the lens distribution (else only the residual stream: no projection until the exit).
    needs_logits: ClassVar[bool] = True
    needs_previous: ClassVar[bool] = False  # observe the layer below the first exit layer too (seeds `state`)
    threshold_range: ClassVar[tuple[float, float]] = (0.0, 1.0)  # the closed interval a `threshold` lies in

    def __post_init__(self) -> None:
        """Check ``threshold``, for the measures that have one."""
        low, high = self.threshold_range
        check_number(getattr(self, "threshold", low), field="threshold", owner=self.name, low=low, high=high)

    def step(self, log_probs: torch.Tensor | None, hidden: torch.Tensor, state: dict[str, Any]) -> bool:
        """Record this layer in ``state`` and say whether the token is confident enough to exit here."""
        raise NotImplementedError


@MEASURES.register
@dataclass(frozen=True, kw_only=True)
class MaxProb(Confidence):
    """Confident when the lens's top probability is at least ``threshold`` (``1.0``: practically never)."""

    name: ClassVar[str] = "max-prob"
    threshold: float = 0.9

    def step(self, log_probs, hidden, state) -> bool:
        return bool(log_probs.max().exp() >= self.threshold)


@MEASURES.register
@dataclass(frozen=True, kw_only=True)
class Margin(Confidence):
    """Confident when top-1 minus top-2 probability is at least ``threshold`` (CALM's softmax response)."""

    name: ClassVar[str] = "margin"
    threshold: float = 0.5

    def step(self, log_probs, hidden, state) -> bool:
        top = log_probs.topk(2).values.exp()
        return bool(top[0] - top[1] >= self.threshold)


@MEASURES.register
@dataclass(frozen=True, kw_only=True)
class Entropy(Confidence):
    """Confident when the lens distribution's entropy (nats) is at most ``threshold``."""

    name: ClassVar[str] = "entropy"
    threshold: float = 1.0
    threshold_range: ClassVar[tuple[float, float]] = (0.0, 1e6)

    def step(self, log_probs, hidden, state) -> bool:
        return bool(entropy(log_probs) <= self.threshold)


@MEASURES.register
@dataclass(frozen=True, kw_only=True)
class Saturation(Confidence):
    """Confident when the cosine similarity of this layer's hidden state with the previous one is at least
    ``threshold`` (CALM's hidden-state saturation; needs no vocabulary projection until the exit). Two equal
    states are saturated, zero ones too (whose cosine is undefined)."""

    name: ClassVar[str] = "saturation"
    threshold: float = 0.99
    needs_logits: ClassVar[bool] = False
    needs_previous: ClassVar[bool] = True
    threshold_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def step(self, log_probs, hidden, state) -> bool:
        previous, state["hidden"] = state.get("hidden"), hidden
        if previous is None or torch.equal(hidden, previous):
            return previous is not None
        cos = torch.nn.functional.cosine_similarity(hidden.double(), previous.double(), dim=-1)  # no overflow
        return bool(cos >= self.threshold)


@MEASURES.register
@dataclass(frozen=True, kw_only=True)
class Agreement(Confidence):
    """Confident when the lens argmax has been the same for ``count`` consecutive layers (this one included)."""

    name: ClassVar[str] = "agreement"
    count: int = 3
    needs_previous: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int(self.count, field="count", owner=self.name, low=2)

    def step(self, log_probs, hidden, state) -> bool:
        top = int(log_probs.argmax())
        state["run"] = state.get("run", 0) + 1 if state.get("top") == top else 1
        state["top"] = top
        return state["run"] >= self.count
