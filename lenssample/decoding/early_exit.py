"""The early-exit loop (see :mod:`lenssample.strategies.early_exit` for the method and the key/value trade-off)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from lenssample.adapters import ModelParts, model_parts
from lenssample.decoding.loop import Prompt
from lenssample.decoding.outputs import GenerateOutput
from lenssample.decoding.propagate import StatePropagation
from lenssample.decoding.sampling import TokenPicker
from lenssample.decoding.schedule import RowWriter, decode_rows
from lenssample.decoding.speculative import crop_to
from lenssample.lens.base import Lens
from lenssample.lens.capture import run_layers
from lenssample.strategies.early_exit import Agreement, EarlyExit


class _Exit(Exception):
    """Raised by a block hook to stop the forward pass at a confident layer (private control flow)."""

    def __init__(self, layer: int, hidden: torch.Tensor, logits: torch.Tensor | None) -> None:
        super().__init__(layer)
        # logits: [1, vocab] the lens at the exit layer when the measure computed it (reused to pick the token).
        self.layer, self.hidden, self.logits = layer, hidden, logits


@contextmanager
def exit_hooks(parts: ModelParts, schedule: EarlyExit, lens: Lens) -> Iterator[None]:
    """Hooks on blocks ``min_layer - 1 .. L - 2`` that raise :class:`_Exit` once the measure is confident.

    Only the last position is judged. The hooks are removed in ``finally``, whatever happens inside.
    """
    measure = schedule.measure
    num_layers = parts.num_layers
    first = schedule.min_layer - 1 if measure.needs_previous else schedule.min_layer
    state: dict[str, Any] = {}

    def hook(_module: nn.Module, _args: tuple, output: Any, layer: int) -> None:
        hidden = (output[0] if isinstance(output, tuple) else output)[0, -1]
        if layer == first:
            state.clear()
        logits = log_probs = None
        if measure.needs_logits:
            logits = lens(hidden[None, None], (layer,))[:, 0]  # [1, vocab]
            log_probs = torch.log_softmax(logits[0], dim=-1)
        if layer >= schedule.min_layer:
            if isinstance(measure, Agreement):
                top = int(log_probs.argmax())
                run = state.get("run", 0) + 1 if state.get("top") == top else 1
                state["run"], state["top"] = run, top
                confident = run >= measure.count
            else:
                confident = measure.confident(log_probs, state.get("log_probs"), hidden, state.get("hidden"))
            if confident:
                raise _Exit(layer, hidden, logits)
        elif isinstance(measure, Agreement):
            state["run"], state["top"] = 1, int(log_probs.argmax())
        state["log_probs"], state["hidden"] = log_probs, hidden

    handles = []
    try:
        for layer in range(max(first, 1), num_layers):
            handles.append(
                parts.blocks[layer - 1].register_forward_hook(
                    lambda m, a, o, layer=layer: hook(m, a, o, layer)
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()


def decode_early_exit(
    schedule: EarlyExit,
    model: nn.Module,
    prompt: Prompt,
    *,
    lens: Lens,
    picker: TokenPicker,
    max_new_tokens: int,
    eos_token_ids: torch.Tensor | None = None,
    pad_token_id: int | None = None,
    stopping_criteria: Any = None,
    streamer: Any = None,
    **_: Any,
) -> GenerateOutput:
    """Decode with early exit; ``trace.info["exit_layer"]`` is ``[batch, steps]``.

    ``trace.info["pending"]`` counts the positions waiting for deep keys/values (``skipped_kv="recompute"``);
    ``trace.info["propagated"]`` the attention-only calls that filled skipped layers (``"propagate"``: ``L - e``
    per exit). ``trace.blocks_per_step`` counts whole blocks run per token (the exit layers); the propagated
    attention calls are not blocks and are not in it.
    """
    parts = model_parts(model)
    schedule.check_model(parts.num_layers)
    num_layers = parts.num_layers
    lens = lens.with_final_norm(True)
    # Built (and validated: architecture, layer types) before any decoding.
    propagation = StatePropagation(parts, schedule.min_layer) if schedule.skipped_kv == "propagate" else None

    def decode_row(writer: RowWriter) -> dict[str, list[float]]:
        trace: dict[str, list[float]] = {"exit_layer": [], "pending": [], "propagated": []}
        device = writer.prompt_ids.device
        pending = writer.prompt_ids[0].tolist()  # tokens whose keys/values are missing in some layer
        complete = 0  # positions held by every cache layer
        cache = None
        with torch.inference_mode():
            while not writer.done:
                if cache is not None:
                    crop_to(cache, complete)  # drop the partial keys/values of pending positions
                ids = torch.tensor([pending], dtype=torch.long, device=device)
                positions = torch.arange(complete, complete + len(pending), device=device)[None]
                full = len(pending) > schedule.max_pending or not writer.tokens
                propagated = 0
                try:
                    with _early_exit_hooks(parts, schedule, lens, propagation, enabled=not full):
                        out = run_layers(model, ids, (num_layers,), position_ids=positions, cache=cache)
                    layer, hidden, logits = num_layers, out.hidden[0, -1, 0], None
                    cache = out.cache
                    complete += len(pending)
                    pending = []
                except _Exit as stop:
                    layer, hidden, logits = stop.layer, stop.hidden, stop.logits
                    assert cache is not None, "the prompt pass runs without exit hooks"
                    if propagation is not None:
                        # The cache is complete after every propagate step, so this pass fed one position.
                        assert len(pending) == 1
                        propagated = propagation.fill(hidden[None, None], layer)
                        complete += 1
                        pending = []
                trace["exit_layer"].append(layer)
                trace["pending"].append(len(pending))
                trace["propagated"].append(propagated)
                if logits is None:  # a full-depth pass, or a measure that needs no lens (Saturation)
                    logits = lens(hidden[None, None], (layer,))[:, 0]
                token = int(picker.pick(picker.process(writer.sequence(), logits))[0])
                pending.append(token)
                writer.emit(token)
        return trace

    return decode_rows(
        prompt,
        decode_row,
        max_new_tokens=max_new_tokens,
        eos_token_ids=eos_token_ids,
        pad_token_id=pad_token_id,
        stopping_criteria=stopping_criteria,
        streamer=streamer,
        layers=(num_layers,),
        blocks=lambda traces, tokens: sum(sum(t["exit_layer"]) for t in traces) / max(tokens, 1),
    )


@contextmanager
def _early_exit_hooks(
    parts: ModelParts,
    schedule: EarlyExit,
    lens: Lens,
    propagation: StatePropagation | None,
    *,
    enabled: bool,
) -> Iterator[None]:
    """The exit hooks (and, for ``skipped_kv="propagate"``, the kwargs capture) of one pass, or nothing."""
    if not enabled:
        yield
        return
    with exit_hooks(parts, schedule, lens), propagation.capture() if propagation else nullcontext():
        yield
