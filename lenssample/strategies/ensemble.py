"""Layer ensembles: next-token distributions mixed from several layers' lens distributions.

Two ways to combine the per-layer distributions ``q_j`` with weights ``w_j`` (summing to 1):

* ``"mixture"``: ``p = sum_j w_j q_j`` (a mixture of probabilities; weights are posterior-like responsibilities);
* ``"product"``: ``p ∝ prod_j q_j^{w_j}``, i.e. ``log p = sum_j w_j log q_j`` renormalised (a product of experts).

Weights are explicit numbers, a scheme over the layers (``"uniform"``, ``"linear"`` and ``"exponential"`` ramps that
grow toward the last layer), or per-row confidences (``"entropy"``: ``w_j ∝ exp(-H(q_j) / temperature)``;
``"max_prob"``: ``w_j ∝ max q_j``). :class:`LayerWindow` is the VISTA "self-logits augmentation" form: the final
layer mixed with the average of a window of the last ``k`` layers before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lenssample.stats import LOG_PROB_FLOOR, entropy
from lenssample.stats import log_probs as log_probs_of
from lenssample.strategies.base import Strategy, StrategyOutput, register_strategy
from lenssample.strategies.fields import LayersField, LayerSpec
from lenssample.validation import check_choice, check_int, check_number

WEIGHT_SCHEMES = ("uniform", "linear", "exponential", "entropy", "max_prob")


def _static_weights(scheme: str, layers: Sequence[int], decay: float) -> torch.Tensor:
    """``[n_layers]`` weights of a static scheme (unnormalised), growing toward the last layer."""
    position = torch.arange(1, len(layers) + 1, dtype=torch.float64)
    if scheme == "exponential":  # each layer weighs `decay` times the next one
        return torch.tensor(decay, dtype=torch.float64) ** (len(layers) - position)
    return position if scheme == "linear" else torch.ones_like(position)


def _confidence_log_weights(log_probs: torch.Tensor, scheme: str, temperature: float) -> torch.Tensor:
    """``[rows, n_layers]`` log-weights from each layer's confidence at each row (normalised over layers)."""
    # "max_prob": the log of the top probability, w ∝ max q.
    if scheme == "max_prob":
        return torch.log_softmax(log_probs.max(dim=-1).values, dim=-1)
    # Shifted so the most confident layer scores 0 before dividing: a tiny temperature then sends the others to
    # -inf (a one-hot weight) instead of every score to -inf (NaN weights).
    score = -entropy(log_probs).double()
    score = (score - score.max(dim=-1, keepdim=True).values) / temperature
    return torch.log_softmax(score, dim=-1).float()


def _mixture(log_probs: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """``log sum_j w_j q_j``: ``[rows, vocab]`` from ``[rows, n, vocab]`` and ``[rows or 1, n]``."""
    return torch.logsumexp(log_probs + log_weights[..., None], dim=1)


def _product(log_probs: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """``log_softmax(sum_j w_j log q_j)``, each ``log q_j`` floored at ``LOG_PROB_FLOOR``: layers whose supports do
    not meet (one finite token each, say) still leave a distribution, and a zero weight adds nothing. A token that
    every layer excludes (``-inf``) stays excluded."""
    terms = (log_weights.exp()[..., None] * log_probs.clamp_min(LOG_PROB_FLOOR)).sum(dim=1)
    return torch.log_softmax(terms.masked_fill(log_probs.isneginf().all(dim=1), -math.inf), dim=-1)


COMBINE: dict[str, Callable[..., torch.Tensor]] = {"mixture": _mixture, "product": _product}


@register_strategy
@dataclass(frozen=True, kw_only=True)
class LayerEnsemble(Strategy):
    """A weighted ensemble of layer distributions (see the module docstring for the formulas).

    Args:
        layers: ``"all"`` (``0..L``) or explicit layer numbers (negative counts from the end).
        weights: one of ``"uniform"``, ``"linear"``, ``"exponential"``, ``"entropy"``, ``"max_prob"``, or one
            non-negative number per layer (in the order of ``layers``; normalised to sum to 1).
        combine: ``"mixture"`` or ``"product"``.
        decay: ratio between consecutive weights of the ``"exponential"`` ramp, in ``(0, 1]``.
        temperature: of the ``"entropy"`` confidence weights, ``> 0``.

    Output logits are the ensemble's log-probabilities (normalised). ``info["top_layer"]``: ``[rows]`` the layer
    with the largest weight at each row.
    """

    name: ClassVar[str] = "ensemble"
    layers: LayerSpec = LayersField("all", ("all",))  # type: ignore[assignment]
    weights: Any = "uniform"
    combine: str = "mixture"
    decay: float = 0.7
    temperature: float = 1.0

    def __post_init__(self) -> None:
        owner, spec = self.name, self.layers.spec
        if isinstance(self.weights, str):
            if self.weights not in WEIGHT_SCHEMES:
                raise ValueError(
                    f"{owner}: weights={self.weights!r} is not a scheme ({', '.join(WEIGHT_SCHEMES)}) nor a list of "
                    "numbers; pass e.g. weights=uniform or weights=0.2,0.8"
                )
        else:
            values = [self.weights] if isinstance(self.weights, int | float) else self.weights
            if not isinstance(values, Sequence) or not values:
                raise ValueError(f"{owner}: weights={self.weights!r} must be a scheme or a non-empty list")
            fix = "Weights are non-negative numbers."
            weights = tuple(check_number(w, field="weights", owner=owner, low=0.0, fix=fix) for w in values)
            object.__setattr__(self, "weights", weights)
            if sum(weights) <= 0:
                raise ValueError(
                    f"{owner}: weights={list(weights)!r} are all zero; give at least one layer a positive weight"
                )
            if not isinstance(spec, str) and len(spec) != len(weights):
                raise ValueError(
                    f"{owner}: weights has {len(weights)} numbers but layers={list(spec)!r} has {len(spec)}; "
                    "give one weight per layer"
                )
            if not isinstance(spec, str) and min(spec) < 0:
                raise ValueError(
                    f"{owner}: layers={list(spec)!r} counts from the end, which explicit weights cannot follow "
                    "for every depth; give non-negative layer numbers with explicit weights"
                )
        check_choice(self.combine, COMBINE, field="combine", owner=owner)
        check_number(self.decay, field="decay", owner=owner, low=0.0, high=1.0, low_open=True)
        check_number(self.temperature, field="temperature", owner=owner, low=0.0, low_open=True)

    def given_layers(self, num_layers: int) -> tuple[int, ...]:
        """The layers in the order the user gave them (the order of explicit ``weights``)."""
        layers = self.layers.resolve(num_layers, {"all": lambda n: range(n + 1)})
        if isinstance(self.weights, tuple) and len(self.weights) != len(layers):
            raise ValueError(
                f"{self.name}: weights has {len(self.weights)} numbers but layers={self.layers.spec!r} has "
                f"{len(layers)} layers for this model; give one weight per layer"
            )
        return layers

    def read_layers(self, num_layers: int) -> tuple[int, ...]:
        """The ensemble's layers, sorted (what ``layers(num_layers)`` returns)."""
        return tuple(sorted(self.given_layers(num_layers)))

    def log_weights(self, log_probs: torch.Tensor, layers: tuple[int, ...]) -> torch.Tensor:
        """``[rows or 1, n_layers]`` normalised log-weights for ``layers`` (sorted, as read)."""
        if isinstance(self.weights, tuple):
            # Explicit weights come with "all" (0..L, so L is the last layer read) or non-negative layer numbers.
            by_layer = dict(zip(self.given_layers(layers[-1]), self.weights))
            weights = torch.tensor([by_layer[layer] for layer in layers], dtype=torch.float64)
        elif self.weights in ("entropy", "max_prob"):
            return _confidence_log_weights(log_probs, self.weights, self.temperature)
        else:
            weights = _static_weights(self.weights, layers, self.decay)
        weights = weights / weights.max()  # huge explicit weights (1e308 each) would overflow their sum
        return (weights / weights.sum()).log().float().to(log_probs.device)[None]

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        log_probs = log_probs_of(lens_logits)  # [rows, n, vocab]
        log_weights = self.log_weights(log_probs, layers)
        logits = COMBINE[self.combine](log_probs, log_weights)
        top = torch.tensor(layers, device=logits.device)[log_weights.argmax(dim=-1)]
        return StrategyOutput(logits=logits, info={"top_layer": top.expand(logits.shape[0])})


@register_strategy
@dataclass(frozen=True, kw_only=True)
class LayerWindow(Strategy):
    """The final layer mixed with a window of the ``window`` layers before it (VISTA's self-logits augmentation,
    Li et al. 2025, arXiv 2502.03628).

    ``log p = log_softmax((1 - gamma) * log q_L + gamma * mean_{j in L-window..L-1} log q_j)``. VISTA averages the
    window's *logits*; averaging log-probabilities instead gives the same distribution up to each layer's constant
    and keeps a layer with huge logits from dominating. ``gamma = 0`` is the final layer.

    Args:
        window: how many layers before ``L`` to average (``1..L``).
        gamma: weight of the window in ``[0, 1]``.
    """

    name: ClassVar[str] = "window"
    window: int = 4
    gamma: float = 0.3

    def __post_init__(self) -> None:
        check_int(self.window, field="window", owner=self.name, low=1, fix="It counts layers before L.")
        check_number(self.gamma, field="gamma", owner=self.name, low=0.0, high=1.0, fix="Use e.g. gamma=0.3.")

    def layers(self, num_layers: int) -> tuple[int, ...]:
        if self.window > num_layers:
            raise ValueError(
                f"{self.name}: window={self.window} exceeds the {num_layers} layers before the final one; "
                f"use window <= {num_layers}"
            )
        return tuple(range(num_layers - self.window, num_layers + 1))

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        log_probs = log_probs_of(lens_logits)
        final = log_probs[:, -1]
        if self.gamma == 0:
            return StrategyOutput(logits=final)
        window = log_probs[:, :-1].clamp_min(LOG_PROB_FLOOR).mean(dim=1)
        # gamma = 1 takes the window alone: 0 * log q_L would be NaN where q_L = 0.
        mixed = self.gamma * window + ((1 - self.gamma) * final if self.gamma < 1 else 0.0)
        return StrategyOutput(logits=torch.log_softmax(mixed, dim=-1))
