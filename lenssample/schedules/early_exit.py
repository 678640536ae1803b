"""Early exit (lossy), CALM-style (Schuster et al. 2022, arXiv 2207.07061): stop each token at a confident layer.

At every step the blocks run one after the other; after each block from ``min_layer`` on, a confidence measure
(:mod:`~lenssample.schedules.confidence`) looks at the lens distribution of the new position (or at its hidden
state) and, when confident, the pass stops there: the blocks above are not run, and the token is picked from the
lens at the exit layer.

Keys and values of the skipped layers. Later tokens attend to every earlier position in every layer, so a position
that exited at layer ``e`` lacks keys/values in layers ``e..L-1``. Both standard options are implemented, chosen by
``EarlyExit(skipped_kv=...)``:

- ``"recompute"`` (default), *lazy recomputation*: positions that exited early stay *pending* and are fed again with
  the next token, so the next pass that reaches a layer computes that layer's keys and values for them from their
  true hidden states (a pass that reaches ``L`` completes them all). Exact: no approximated keys/values, and with a
  never-confident measure it is plain decoding. The price: the layers below the exit run again for the pending
  positions (cheap per position while decoding is memory bound, but not free), and ``max_pending`` bounds that by
  forcing a full-depth step.
- ``"propagate"``, CALM's *state propagation* (:mod:`~lenssample.schedules.propagate`): the exited hidden state is
  copied up, and each skipped block's own attention module runs on it, which appends its keys/values to the cache;
  the skipped MLPs never run and nothing is re-run later. The price is quality: later tokens attend, in the skipped
  layers, to keys/values of an approximate state, and the errors add up over a generation. ``max_pending`` has no
  effect. For a ``layer_types`` model (Gemma-2/3), ``min_layer`` must leave a block of every attention type below it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.model.adapters import model_parts
from lenssample.model.capture import block_output, hooked
from lenssample.model.surgery import crop_to
from lenssample.schedules.base import Row, RowRun, Schedule, register_schedule
from lenssample.schedules.confidence import MEASURES, Confidence, MaxProb
from lenssample.schedules.propagate import StatePropagation
from lenssample.validation import check_choice, check_int

SKIPPED_KV = ("recompute", "propagate")
"""The options of ``EarlyExit(skipped_kv=...)`` (see the module docstring)."""


@register_schedule
@dataclass(frozen=True, kw_only=True)
class EarlyExit(Schedule):
    """Early-exit schedule (lossy): see the module docstring.

    Args:
        measure: a :class:`~lenssample.schedules.confidence.Confidence` (``MaxProb``, ``Margin``, ``Entropy``,
            ``Saturation``, ``Agreement``); in a spec, its name and parameters: ``measure=margin,threshold=0.3``.
        min_layer: first layer at which an exit is allowed (``1..L``; ``L`` means never exit early).
        max_pending: positions that may wait for their deep keys/values before a full-depth step is forced
            (``skipped_kv="recompute"`` only).
        skipped_kv: how the skipped layers get keys/values for an exited position: ``"recompute"`` (lazily, exact)
            or ``"propagate"`` (CALM's copied state, cheaper, approximate).

    Trace: ``info["exit_layer"]`` per step; ``info["pending"]``, positions waiting for deep keys/values;
    ``info["propagated"]``, attention-only calls that filled skipped layers (not counted as blocks).
    """

    name: ClassVar[str] = "early-exit"
    nested: ClassVar[dict] = {"measure": MEASURES}
    measure: Confidence = field(default_factory=MaxProb)
    min_layer: int = 1
    max_pending: int = 16
    skipped_kv: str = "recompute"

    def __post_init__(self) -> None:
        if not isinstance(self.measure, Confidence):
            raise TypeError(
                "measure must be a confidence measure, e.g. MaxProb(threshold=0.9), Margin(...), Entropy(...), "
                f"Saturation(...) or Agreement(count=3); got {type(self.measure).__name__}"
            )
        check_int(self.min_layer, field="min_layer", owner=self.name, low=1)
        check_int(self.max_pending, field="max_pending", owner=self.name, low=1)
        check_choice(self.skipped_kv, SKIPPED_KV, field="skipped_kv", owner=self.name)

    def check_model(self, num_layers: int) -> None:
        if self.min_layer > num_layers:
            raise ValueError(
                f"{self.name}: min_layer={self.min_layer}, but this model has layers 1..{num_layers}; pass "
                f"min_layer <= {num_layers}"
            )

    def prepare(self, model: nn.Module, lens: Lens) -> StatePropagation | None:
        # Built (and validated: architecture, layer types) before any decoding.
        propagate = self.skipped_kv == "propagate"
        return StatePropagation(model_parts(model), self.min_layer) if propagate else None

    def decode_row(self, row: Row, state: StatePropagation | None) -> RowRun:
        row.lens = row.lens.with_final_norm(True)
        emitter, propagation, num_layers = row.emitter, state, row.parts.num_layers
        info: dict[str, list[float]] = {"exit_layer": [], "pending": [], "propagated": []}
        pending = emitter.sequences[0].tolist()  # tokens whose keys/values are missing in some layer
        complete, cache = 0, None  # positions held by every cache layer, and the cache
        while not emitter.done:
            if cache is not None:
                crop_to(cache, complete)  # drop the partial keys/values of pending positions
            full = len(pending) > self.max_pending or cache is None
            propagated = 0
            try:
                with nullcontext() if full else _exit_hooks(row, self, propagation):
                    out = row.run(pending, complete, num_layers, cache)
                layer, hidden, logits = num_layers, out.hidden[0, -1, 0], None
                cache, complete, pending = out.cache, complete + len(pending), []
            except _Exit as stop:
                layer, hidden, logits = stop.layer, stop.hidden, stop.logits
                if propagation is not None:
                    # The cache is complete after every propagate step, so this pass fed one position.
                    assert len(pending) == 1
                    propagated = propagation.fill(hidden[None, None], layer)
                    complete, pending = complete + 1, []
            for key, value in zip(info, (layer, len(pending), propagated)):
                info[key].append(value)
            if logits is None:  # a full-depth pass, or a measure that needs no lens (Saturation)
                logits = row.logits(hidden[None], layer)
            token = row.picker.pick(row.picker.process(emitter.sequences, logits))
            pending.append(int(token[0]))
            emitter.emit(token)
        return RowRun(info=info, blocks=float(sum(info["exit_layer"])))


class _Exit(Exception):
    """Raised by a block hook to stop the forward pass at a confident layer (private control flow); ``logits``:
    ``[1, vocab]`` the lens at the exit layer when the measure computed it (reused to pick the token)."""

    def __init__(self, layer: int, hidden: torch.Tensor, logits: torch.Tensor | None) -> None:
        self.layer, self.hidden, self.logits = layer, hidden, logits


@contextmanager
def _exit_hooks(row: Row, schedule: EarlyExit, propagation: StatePropagation | None) -> Iterator[None]:
    """Hooks on blocks ``min_layer - 1 .. L - 2`` that raise :class:`_Exit` once the measure is confident (only
    the last position is judged), plus, for ``skipped_kv="propagate"``, the capture of the blocks' arguments. The
    hooks are removed in ``finally``."""
    measure = schedule.measure
    first = schedule.min_layer - 1 if measure.needs_previous else schedule.min_layer
    state: dict[str, Any] = {}

    def hook(layer: int, _module: nn.Module, _args: tuple, output: Any) -> None:
        hidden = block_output(output)[0, -1]
        logits = log_probs = None
        if measure.needs_logits:
            logits = row.logits(hidden[None], layer)  # [1, vocab]
            log_probs = torch.log_softmax(logits[0], dim=-1)
        confident = measure.step(log_probs, hidden, state)
        if confident and layer >= schedule.min_layer:
            raise _Exit(layer, hidden, logits)

    hooks = [(row.parts.blocks[i - 1], partial(hook, i)) for i in range(max(first, 1), row.parts.num_layers)]
    with hooked(hooks), propagation.capture() if propagation is not None else nullcontext():
        yield
