"""Early exit (lossy), CALM-style (Schuster et al. 2022, arXiv 2207.07061): stop each token at a confident layer.

At every step the blocks run one after the other; after each block from ``min_layer`` on, a *confidence measure*
looks at the lens distribution of the new position (or at its hidden state) and, when confident, the pass stops
there: the blocks above are not run, and the token is picked from the lens at the exit layer.

Keys and values of the skipped layers. Later tokens attend to every earlier position in every layer, so a position
that exited at layer ``e`` lacks keys/values in layers ``e..L-1``. Both standard options are implemented, chosen by
``EarlyExit(skipped_kv=...)``:

- ``"recompute"`` (default), *lazy recomputation*: positions that exited early stay *pending* and are fed again with
  the next token, so the next pass that reaches a layer computes that layer's keys and values for them from their
  true hidden states (a pass that reaches ``L`` completes them all). Exact: no approximated keys/values, and with a
  never-confident measure it is plain decoding. The price: the layers below the exit run again for the pending
  positions (cheap per position while decoding is memory bound, but not free), and ``max_pending`` bounds that by
  forcing a full-depth step.
- ``"propagate"``, CALM's *state propagation* (:mod:`lenssample.decoding.propagate`): the exited hidden state is
  copied up, and each skipped block's own attention module runs on it (after that block's pre-attention norm),
  which appends its keys/values to the cache; the skipped MLPs never run and nothing is re-run later, so the cache
  is complete after every step and each step costs only its exit depth plus ``L - e`` attention calls of one
  position. The price is quality: later tokens attend, in the skipped layers, to keys/values of an approximate
  state (the hidden state of layer ``e``, not of layer ``j``), and the errors add up over a generation. The query and
  output projections of those attention calls are wasted work (CALM computes only the key/value projections);
  lenssample accepts that rather than re-implement each architecture's attention. ``max_pending`` has no effect.
  Supported for the architectures whose adapter names their attention module (every built-in one); for a
  ``layer_types`` model (Gemma-2/3), ``min_layer`` must leave a block of every attention type below it.

The exit is a compute schedule, not a strategy: pass it as ``lenssample.generate(..., schedule=EarlyExit(...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lenssample.decoding.schedule import Schedule

SKIPPED_KV = ("recompute", "propagate")
"""The options of ``EarlyExit(skipped_kv=...)`` (see the module docstring)."""


def _check_threshold(owner: str, value: float, low: float, high: float | None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    ok = ok and (high is None or value <= high)
    if not ok:
        rng = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{owner}(threshold={value!r}): threshold must be a number in {rng}")


class Confidence:
    """Base class of confidence measures: ``confident(...)`` says whether to stop after this layer.

    Args of ``confident``: ``log_probs: [vocab]`` lens log-probs at this layer (``None`` when ``needs_logits`` is
    false), ``previous_log_probs`` the same for the layer below (``None`` at the first layer checked),
    ``hidden`` / ``previous_hidden``: ``[d_model]`` residual streams.
    """

    needs_logits: ClassVar[bool] = True
    needs_previous: ClassVar[bool] = False

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class MaxProb(Confidence):
    """Confident when the lens's top probability is at least ``threshold`` (``1.0``: practically never)."""

    threshold: float = 0.9

    def __post_init__(self) -> None:
        _check_threshold("MaxProb", self.threshold, 0.0, 1.0)

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        return bool(log_probs.max().exp() >= self.threshold)


@dataclass(frozen=True, kw_only=True)
class Margin(Confidence):
    """Confident when top-1 minus top-2 probability is at least ``threshold`` (CALM's softmax response)."""

    threshold: float = 0.5

    def __post_init__(self) -> None:
        _check_threshold("Margin", self.threshold, 0.0, 1.0)

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        top = log_probs.topk(2).values.exp()
        return bool(top[0] - top[1] >= self.threshold)


@dataclass(frozen=True, kw_only=True)
class Entropy(Confidence):
    """Confident when the lens distribution's entropy (nats) is at most ``threshold``."""

    threshold: float = 1.0

    def __post_init__(self) -> None:
        _check_threshold("Entropy", self.threshold, 0.0, None)

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum()
        return bool(entropy <= self.threshold)


@dataclass(frozen=True, kw_only=True)
class Saturation(Confidence):
    """Confident when the cosine similarity of this layer's hidden state with the previous one is at least
    ``threshold`` (CALM's hidden-state saturation; needs no vocabulary projection until the exit)."""

    threshold: float = 0.99
    needs_logits: ClassVar[bool] = False
    needs_previous: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_threshold("Saturation", self.threshold, -1.0, 1.0)

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        if previous_hidden is None:
            return False
        cos = torch.nn.functional.cosine_similarity(hidden.float(), previous_hidden.float(), dim=-1)
        return bool(cos >= self.threshold)


@dataclass(frozen=True, kw_only=True)
class Agreement(Confidence):
    """Confident when the lens argmax has been the same for ``count`` consecutive layers (this one included)."""

    count: int = 3
    needs_previous: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 2:
            raise ValueError(f"Agreement(count={self.count!r}): count must be an integer >= 2")

    def confident(self, log_probs, previous_log_probs, hidden, previous_hidden) -> bool:
        raise AssertionError("Agreement keeps a run length; the early-exit loop counts it")


@dataclass(frozen=True, kw_only=True)
class EarlyExit(Schedule):
    """Early-exit schedule (lossy): see the module docstring.

    Args:
        measure: a :class:`Confidence` (``MaxProb``, ``Margin``, ``Entropy``, ``Saturation``, ``Agreement``).
        min_layer: first layer at which an exit is allowed (``1..L``; ``L`` means never exit early).
        max_pending: positions that may wait for their deep keys/values before a full-depth step is forced
            (``skipped_kv="recompute"`` only).
        skipped_kv: how the skipped layers get keys/values for an exited position: ``"recompute"`` (lazily, exact)
            or ``"propagate"`` (CALM's copied state, cheaper, approximate); see the module docstring.
    """

    name: ClassVar[str] = "early-exit"
    measure: Confidence
    min_layer: int = 1
    max_pending: int = 16
    skipped_kv: str = "recompute"

    def __post_init__(self) -> None:
        if not isinstance(self.measure, Confidence):
            raise TypeError(
                "measure must be a confidence measure, e.g. MaxProb(threshold=0.9), Margin(...), Entropy(...), "
                f"Saturation(...) or Agreement(count=3); got {type(self.measure).__name__}"
            )
        for name, low in (("min_layer", 1), ("max_pending", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"EarlyExit({name}={value!r}): must be an integer >= {low}")
        if self.skipped_kv not in SKIPPED_KV:
            raise ValueError(
                f"EarlyExit(skipped_kv={self.skipped_kv!r}): choose one of {', '.join(map(repr, SKIPPED_KV))}"
            )

    def check_model(self, num_layers: int) -> None:
        if self.min_layer > num_layers:
            raise ValueError(
                f"EarlyExit(min_layer={self.min_layer}): this model has layers 1..{num_layers}; pass min_layer <= "
                f"{num_layers}"
            )

    def to_dict(self) -> dict[str, Any]:
        measure = {"name": type(self.measure).__name__, **self.measure.__dict__}
        return {
            "name": self.name,
            "measure": measure,
            "min_layer": self.min_layer,
            "max_pending": self.max_pending,
            "skipped_kv": self.skipped_kv,
        }

    def decode(self, model, prompt, **kwargs):
        from lenssample.decoding.early_exit import decode_early_exit

        return decode_early_exit(self, model, prompt, **kwargs)


MEASURES: dict[str, type[Confidence]] = {
    "max-prob": MaxProb,
    "margin": Margin,
    "entropy": Entropy,
    "saturation": Saturation,
    "agreement": Agreement,
}
