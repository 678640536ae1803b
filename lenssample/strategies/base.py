"""The strategy interface, the registry of strategies by name, and the baseline strategies.

A strategy decides *which distribution* the next token is drawn from. It is a pure function of the lens outputs of
the layers it reads, at one position::

    lens_logits: [rows, n_layers, vocab]  ->  StrategyOutput(logits: [rows, vocab], info: {name: [rows]})

``rows`` is the batch in generation (last position of each sequence) and ``batch * positions`` in teacher-forced
scoring, so one strategy object serves both. The output ``logits`` are unnormalised next-token scores (``-inf``
allowed for excluded tokens, never a whole row of them); ``log_softmax`` of them is the strategy's distribution.

Strategies are frozen, keyword-only dataclasses whose fields are their hyperparameters, validated in
``__post_init__``. They are registered by name (``@register_strategy``) so that the CLI and config files can build
them: ``strategy_from_name("dola", layers="high")`` or ``Strategy.from_dict({"name": "dola", "layers": "high"})``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy buildable by its ``name``."""
    name = cls.name
    if not name or name in STRATEGIES and STRATEGIES[name] is not cls:
        raise ValueError(f"strategy name {name!r} is empty or already registered")
    STRATEGIES[name] = cls
    return cls


@dataclass(frozen=True)
class StrategyOutput:
    """A strategy's decision at each row.

    Attributes:
        logits: ``[rows, vocab]`` unnormalised next-token scores (float32).
        info: per-row values worth tracing, e.g. ``{"premature_layer": [rows]}``; empty for most strategies.
    """

    logits: torch.Tensor
    info: Mapping[str, torch.Tensor] = field(default_factory=dict)


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """Base class: subclasses set ``name``, declare their hyperparameters as fields, and implement
    :meth:`layers` and :meth:`__call__`.

    Class attributes:
        name: registry name.
        apply_final_norm: whether the lens should normalise intermediate layers (``False`` only for parity with
            references that unembed raw hidden states).
    """

    name: ClassVar[str] = ""
    apply_final_norm: ClassVar[bool] = True

    def layers(self, num_layers: int) -> tuple[int, ...]:
        """The sorted, distinct layer numbers this strategy reads, for a model of ``num_layers`` blocks."""
        raise NotImplementedError

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        """Combine lens outputs into next-token logits.

        Args:
            lens_logits: ``[rows, n_layers, vocab]`` lens logits of ``layers`` (as returned by :meth:`layers`).
            layers: the layer number of each slice along dimension 1.

        Returns:
            :class:`StrategyOutput` with ``logits: [rows, vocab]``.
        """
        raise NotImplementedError

    def check_model(self, num_layers: int) -> tuple[int, ...]:
        """The layers for a model of ``num_layers`` blocks, validated: raises ``ValueError`` naming the field."""
        layers = tuple(self.layers(num_layers))
        for layer in layers:
            if not 0 <= layer <= num_layers:
                raise ValueError(
                    f"{self.name} reads layer {layer}, but the model has layers 0..{num_layers}; "
                    f"choose layers in that range"
                )
        if not layers:
            raise ValueError(
                f"{self.name} reads no layer for a model of {num_layers} layers; give it some layers"
            )
        assert list(layers) == sorted(set(layers)), "Strategy.layers must return sorted distinct layers"
        return layers

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **hyperparameters}``, the inverse of :meth:`from_dict`."""
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values[f.name] = list(value) if isinstance(value, tuple) else value
        return {"name": self.name, **values}

    @staticmethod
    def from_dict(spec: Mapping[str, Any]) -> Strategy:
        """Build a strategy from ``{"name": ..., **hyperparameters}``."""
        if "name" not in spec:
            raise ValueError(f"strategy spec {dict(spec)!r} has no 'name'; add e.g. 'name': 'final'")
        params = {k: v for k, v in spec.items() if k != "name"}
        return strategy_from_name(spec["name"], **params)


def strategy_from_name(name: str, **params: Any) -> Strategy:
    """Build a registered strategy; unknown names and parameters raise with a "did you mean" hint."""
    if name not in STRATEGIES:
        raise ValueError(
            f"strategy={name!r} is not known.{_did_you_mean(name, STRATEGIES)} "
            f"Known strategies: {', '.join(sorted(STRATEGIES))}"
        )
    cls = STRATEGIES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in params:
        if key not in fields:
            raise ValueError(
                f"strategy {name!r} has no parameter {key!r}.{_did_you_mean(key, fields)} "
                f"Its parameters: {', '.join(fields) or '(none)'}"
            )
    return cls(**params)


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` value: JSON (numbers, true/false, lists, null), a comma list, or a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [parse_value(part.strip()) for part in text.split(",") if part.strip()]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
    """``["layers=high", "alpha=0.2"]`` -> ``{"layers": "high", "alpha": 0.2}``."""
    params: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not of the form key=value; write e.g. --set alpha=0.1")
        params[key.strip()] = parse_value(value.strip())
    return params


@register_strategy
@dataclass(frozen=True, kw_only=True)
class FinalLayer(Strategy):
    """The model's own next-token distribution: the lens at the final layer ``L`` (the baseline)."""

    name: ClassVar[str] = "final"

    def layers(self, num_layers: int) -> tuple[int, ...]:
        return (num_layers,)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        return StrategyOutput(logits=lens_logits[:, -1])


@register_strategy
@dataclass(frozen=True, kw_only=True)
class SingleLayer(Strategy):
    """Decode from one layer through the lens (``layer=-1`` is the final layer; negative counts from the end).

    When ``layer < L`` only the first ``layer`` blocks run: this is early exit at a fixed depth.
    """

    name: ClassVar[str] = "layer"
    layer: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ValueError(
                f"layer={self.layer!r} must be an integer layer number (negative counts from the end)"
            )

    def layers(self, num_layers: int) -> tuple[int, ...]:
        layer = self.layer if self.layer >= 0 else num_layers + 1 + self.layer
        if not 0 <= layer <= num_layers:
            raise ValueError(
                f"layer={self.layer} is out of range for a model with layers 0..{num_layers}; "
                f"pass 0..{num_layers} or -1..-{num_layers + 1}"
            )
        return (layer,)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        return StrategyOutput(logits=lens_logits[:, 0])
