"""Validation and resolution of the hyperparameters that several strategies share.

Values may arrive from Python (tuples, lists, ints) or from the CLI through ``parse_assignments`` (JSON numbers,
comma lists, strings), so every check accepts both and stores a hashable normal form (tuples).

Layer sets are written either as a preset name (``"low"``, ``"high"``, ``"all"``) resolved once the model depth
``L`` is known, or as explicit layer numbers (negative numbers count from the end: ``-1`` is ``L``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import torch

from lenssample.validation import check_number, did_you_mean, is_int

# Largest magnitude a strategy lets through: keeps contrasts of huge adversarial logits finite.
LOGIT_LIMIT = 1.0e30

LayerSpec = str | tuple[int, ...]


def check_layer_spec(value: Any, *, field: str, owner: str, presets: Sequence[str]) -> LayerSpec:
    """Normalise a layer-set field: a preset name, or a non-empty tuple of distinct integers (else ``ValueError``)."""
    names = ", ".join(map(repr, presets))
    if isinstance(value, str):
        if value in presets:
            return value
        raise ValueError(
            f"{owner}: {field}={value!r} is not a preset ({names}) nor a list of layer numbers."
            f"{did_you_mean(value, presets)}"
        )
    layers = (value,) if is_int(value) else value
    if not isinstance(layers, Sequence) or isinstance(layers, bytes):
        raise ValueError(
            f"{owner}: {field}={value!r} must be one of {names} or a list of layer numbers, e.g. {field}=[8, 16]"
        )
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{owner}: {field}=[] is empty; give layer numbers, e.g. {field}=[8, 16]")
    bad = [layer for layer in layers if not is_int(layer)]
    if bad:
        raise ValueError(f"{owner}: {field}={list(layers)!r} contains {bad[0]!r}; layer numbers are integers")
    if len(set(layers)) != len(layers):
        dup = next(layer for layer in layers if layers.count(layer) > 1)
        raise ValueError(f"{owner}: {field}={list(layers)!r} lists layer {dup} twice; list each layer once")
    return layers


def check_layer(value: Any, *, field: str, owner: str, optional: bool = False) -> None:
    """One layer number below ``L`` (negative counts from the end); ``None`` too when ``optional`` (``L // 2``)."""
    if not (is_int(value) or (optional and value is None)):
        either = " or null for L // 2" if optional else ""
        raise ValueError(
            f"{owner}: {field}={value!r} must be an integer layer below L (negative counts from the end){either}"
        )


def resolve_layers(
    spec: LayerSpec,
    num_layers: int,
    *,
    field: str,
    owner: str,
    presets: Mapping[str, Callable[[int], Sequence[int]]],
    allow_final: bool = True,
) -> tuple[int, ...]:
    """Layer numbers (in the order given, negatives resolved) for a model of ``num_layers`` blocks; a ``ValueError``
    for a layer outside ``0..L`` (or equal to ``L`` unless ``allow_final``), or two entries naming the same layer."""
    if isinstance(spec, str):
        layers = tuple(presets[spec](num_layers))
        if not layers:
            raise ValueError(
                f"{owner}: {field}={spec!r} selects no layer for a model of {num_layers} layers; pass explicit layers"
            )
        return layers
    top = num_layers if allow_final else num_layers - 1
    resolved = tuple(layer if layer >= 0 else num_layers + 1 + layer for layer in spec)
    for layer, absolute in zip(spec, resolved):
        if not 0 <= absolute <= top:
            what = "0..L" if allow_final else "0..L-1 (layer L is the mature layer)"
            raise ValueError(
                f"{owner}: {field} contains {layer}, outside {what} = 0..{top} for this model of {num_layers} "
                f"layers; choose layers in that range"
            )
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            f"{owner}: {field}={list(spec)!r} names the same layer twice for a model of {num_layers} layers "
            f"(negative numbers count from the end); list each layer once"
        )
    return resolved


def premature_and_mature(strategy: Any, field: str, num_layers: int) -> tuple[int, int]:
    """``(premature, L)``: the layer below ``L`` that ``strategy``'s ``field`` names (negative counts from the end),
    and the final layer."""
    layer, owner = getattr(strategy, field), strategy.name
    (premature,) = resolve_layers(
        (layer,), num_layers, field=field, owner=owner, presets={}, allow_final=False
    )
    return (premature, num_layers)


def check_alpha(value: Any, *, owner: str) -> float:
    """The plausibility cut-off: keep tokens with ``p >= alpha * max p``; must lie in ``(0, 1]``."""
    fix = "Use e.g. alpha=0.1 (1 keeps only the top token)."
    return check_number(value, field="alpha", owner=owner, low=0.0, high=1.0, low_open=True, fix=fix)


def check_excluded_logit(value: Any, *, owner: str) -> float:
    """The score given to tokens outside the plausibility set: ``-inf`` (generation) or a finite value such as
    ``-1000`` (likelihood scoring, so that every token keeps a finite log-probability)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not float(value) <= -1.0:
        raise ValueError(
            f"{owner}: excluded_logit={value!r} must be a very negative number (-inf, or e.g. -1000) so excluded "
            "tokens stay unlikely"
        )
    return float(value)


def check_plausibility(strategy: Any, *, optional_alpha: bool = False) -> None:
    """Check a contrast strategy's ``alpha`` (``None``: no cut-off, when ``optional_alpha``) and ``excluded_logit``,
    and store them as floats."""
    if not (optional_alpha and strategy.alpha is None):
        object.__setattr__(strategy, "alpha", check_alpha(strategy.alpha, owner=strategy.name))
    excluded = check_excluded_logit(strategy.excluded_logit, owner=strategy.name)
    object.__setattr__(strategy, "excluded_logit", excluded)


def plausible(mature_log_probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """The adaptive plausibility set ``{x: p(x) >= alpha * max p}`` (Li et al. 2023; DoLa eq. 3) of the mature
    layer's ``[rows, vocab]`` log-probabilities, ``alpha`` in ``(0, 1]``: ``[rows, vocab]`` bool, the top token
    always inside."""
    return mature_log_probs >= mature_log_probs.max(dim=-1, keepdim=True).values + math.log(alpha)


def masked_scores(scores: torch.Tensor, keep: torch.Tensor, excluded_logit: float) -> torch.Tensor:
    """``scores`` (at most ``LOGIT_LIMIT``) where ``keep``, ``excluded_logit`` elsewhere: ``[rows, vocab]``."""
    return scores.clamp(max=LOGIT_LIMIT).masked_fill(~keep, excluded_logit)


class LayerChoice:
    """What ``strategy.layers`` returns for a strategy with a ``layers`` hyperparameter.

    The strategy interface has a method ``layers(num_layers)`` while DoLa, ensembles and SLED take a hyperparameter
    that users know as ``layers`` (``--set layers=high``). This object is both: calling it is the interface method
    (the layers the strategy reads), and :attr:`spec` (also its ``repr`` and equality) is the hyperparameter value.
    """

    __slots__ = ("spec", "_strategy")

    def __init__(self, spec: LayerSpec, strategy: Any) -> None:
        self.spec, self._strategy = spec, strategy

    def __call__(self, num_layers: int) -> tuple[int, ...]:
        """The sorted, distinct layers the strategy reads for a model of ``num_layers`` blocks."""
        return self._strategy.read_layers(num_layers)

    def resolve(
        self,
        num_layers: int,
        presets: Mapping[str, Callable[[int], Sequence[int]]],
        *,
        allow_final: bool = True,
    ) -> tuple[int, ...]:
        """:attr:`spec` as layer numbers for a model of ``num_layers`` blocks (see :func:`resolve_layers`)."""
        owner = self._strategy.name
        return resolve_layers(
            self.spec, num_layers, field="layers", owner=owner, presets=presets, allow_final=allow_final
        )

    def __eq__(self, other: object) -> bool:
        other_spec = other.spec if isinstance(other, LayerChoice) else other
        return self.spec == (tuple(other_spec) if isinstance(other_spec, list) else other_spec)

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return repr(self.spec)

    def __json__(self) -> Any:
        return list(self.spec) if isinstance(self.spec, tuple) else self.spec


class LayersField:
    """Data descriptor behind a strategy's ``layers`` hyperparameter (see :class:`LayerChoice`).

    Dataclasses take the class-level ``__get__`` value as the field's default, and ``__init__`` stores through
    ``__set__``, which validates with :func:`check_layer_spec`.
    """

    def __init__(self, default: LayerSpec, presets: Sequence[str]) -> None:
        self.default, self.presets = default, tuple(presets)

    def __set_name__(self, owner: type, name: str) -> None:
        self.field, self.private = name, f"_{name}_spec"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self.default if obj is None else LayerChoice(obj.__dict__[self.private], obj)

    def __set__(self, obj: Any, value: Any) -> None:
        value = value.spec if isinstance(value, LayerChoice) else value
        owner = getattr(type(obj), "name", type(obj).__name__)
        spec = check_layer_spec(value, field=self.field, owner=owner, presets=self.presets)
        obj.__dict__[self.private] = spec
