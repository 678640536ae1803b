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

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from lenssample.specs import Registry, Spec
from lenssample.validation import check_int, check_lens_logits

STRATEGIES = Registry("strategy")
"""Every strategy class by name (a read-only mapping); :func:`strategy_from_name` and specs build from it."""


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy buildable by its ``name``."""
    return STRATEGIES.register(cls)  # type: ignore[return-value]


@dataclass(frozen=True)
class StrategyOutput:
    """A strategy's decision at each row: ``logits [rows, vocab]`` unnormalised next-token scores (float32), and
    ``info``, per-row values worth tracing, e.g. ``{"premature_layer": [rows]}`` (empty for most strategies)."""

    logits: torch.Tensor
    info: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Strategy(Spec):
    """Base class: subclasses set ``name``, declare their hyperparameters as fields, and implement
    :meth:`layers` and :meth:`__call__`."""

    registry: ClassVar[Registry] = STRATEGIES
    # Whether the lens normalises intermediate layers (False only for parity with references that unembed raw
    # hidden states).
    apply_final_norm: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every strategy, a user's too, refuses NaN or +inf lens logits before combining them: none may read or
        # skip a broken layer silently. Not inside a compiled graph (no data-dependent branch there): the decoding
        # loop checks the compiled step's decision instead.
        super().__init_subclass__(**kwargs)
        if (call := cls.__dict__.get("__call__")) is None or getattr(call, "checks_input", False):
            return

        @functools.wraps(call)
        def checked(self: Strategy, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
            if torch.compiler.is_compiling():
                return call(self, lens_logits, layers)
            if not isinstance(lens_logits, torch.Tensor) or lens_logits.dim() != 3 or (
                    lens_logits.shape[1] != len(layers)):  # fmt: skip
                shape = tuple(lens_logits.shape) if isinstance(lens_logits, torch.Tensor) else type(lens_logits)
                raise ValueError(f"strategy {self.name!r}: lens_logits has shape {shape}, but layers={tuple(layers)}; "
                                 f"pass [rows, {len(layers)}, vocab], one slice per layer")  # fmt: skip
            fix = "the model's computation overflowed (try float32) or its weights or the lens's are damaged"
            check_lens_logits(lens_logits, layers, source=f"strategy {self.name!r}", fix=fix)
            out = call(self, lens_logits, layers)
            want = (lens_logits.shape[0], lens_logits.shape[2])
            if not isinstance(out, StrategyOutput) or tuple(out.logits.shape) != want:
                got = tuple(out.logits.shape) if isinstance(out, StrategyOutput) else type(out).__name__
                raise ValueError(f"strategy {self.name!r} returned logits of shape {got}; a strategy's __call__ must "
                                 f"return StrategyOutput(logits=[rows, vocab] = {list(want)})")  # fmt: skip
            return out

        checked.checks_input = True  # type: ignore[attr-defined]
        cls.__call__ = checked  # type: ignore[method-assign]

    def layers(self, num_layers: int) -> tuple[int, ...]:
        """The sorted, distinct layer numbers this strategy reads, for a model of ``num_layers`` blocks."""
        raise NotImplementedError

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        """Combine ``lens_logits: [rows, n_layers, vocab]``, the lens logits of ``layers`` (as :meth:`layers` returns
        them, one per slice along dimension 1), into next-token ``logits: [rows, vocab]``. A ``ValueError`` names
        the first layer holding NaN or ``+inf`` (every subclass's ``__call__`` checks that first)."""
        raise NotImplementedError

    def check_model(self, num_layers: int) -> tuple[int, ...]:
        """The layers for a model of ``num_layers`` blocks, validated: raises ``ValueError`` naming the field."""
        layers = tuple(self.layers(num_layers))
        outside = [layer for layer in layers if not 0 <= layer <= num_layers]
        if outside:
            raise ValueError(
                f"{self.name} reads layer {outside[0]}, but the model has layers 0..{num_layers}; "
                "choose layers in that range"
            )
        if not layers:
            raise ValueError(f"{self.name} reads no layer of this {num_layers}-layer model; give it layers")
        assert list(layers) == sorted(set(layers)), "Strategy.layers must return sorted distinct layers"
        return layers


def strategy_from_name(name: str, **params: Any) -> Strategy:
    """Build a registered strategy; unknown names and parameters raise with a "did you mean" hint."""
    return STRATEGIES.lookup(name).from_params(**params)  # type: ignore[return-value]


def as_strategy(strategy: Any) -> Strategy:
    """A strategy object from an object, a spec string (``"dola:layers=high"``) or a mapping; ``None``: final."""
    if strategy is None:
        return FinalLayer()
    if isinstance(strategy, Spec) and not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be a lenssample Strategy, got the {strategy.registry.kind} {strategy.to_spec()!r}; "
            "pass it as schedule= instead"
        )
    if not isinstance(strategy, (Strategy, str, Mapping)):
        hint = "; pass its .strategy" if isinstance(getattr(strategy, "strategy", None), Strategy) else ""
        raise TypeError(
            f"strategy must be a lenssample Strategy (e.g. lenssample.FinalLayer()) or a spec such as "
            f"'dola:layers=high', got {type(strategy).__name__}{hint}"
        )
    return STRATEGIES.build(strategy)  # type: ignore[return-value]


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
        check_int(self.layer, field="layer", fix="Pass a layer number (negative counts from the end).")

    def layers(self, num_layers: int) -> tuple[int, ...]:
        if not 0 <= (layer := self.layer if self.layer >= 0 else num_layers + 1 + self.layer) <= num_layers:
            raise ValueError(
                f"layer={self.layer} is out of range for a model with layers 0..{num_layers}; "
                f"pass 0..{num_layers} or -1..-{num_layers + 1}"
            )
        return (layer,)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        return StrategyOutput(logits=lens_logits[:, 0])
