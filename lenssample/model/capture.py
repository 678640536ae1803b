"""Run the model and keep the residual stream of chosen layers, at chosen positions only.

Layer numbering (used everywhere in lenssample): layer ``0`` is the embedding output (the input of block 0),
layer ``i`` is the output of block ``i - 1`` counted from 0, i.e. "after ``i`` blocks", and ``L`` (the number of
blocks) is the last block's output *before* the final norm. The lens applies the final norm itself, so the lens at
``L`` is exactly the model's own logits. (Hugging Face's ``output_hidden_states[L]`` has already passed the final
norm; we never read it, so nothing is normalised twice.)

Block outputs are read with forward hooks on the model's own modules: the model's ``forward`` runs unchanged
(attention masks, rotary embeddings, caches, sliding windows are all the model's business).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from lenssample.model.adapters import model_parts
from lenssample.model.surgery import truncated_blocks


@dataclass
class LayerOutputs:
    """What one forward pass returns: ``hidden [batch, positions, n_layers, d_model]``, the residual stream
    (pre-norm) of ``layers`` (along dimension 2) at the kept positions, and the model's KV ``cache`` after this
    pass (``None`` when not caching)."""

    hidden: torch.Tensor
    layers: tuple[int, ...]
    cache: Any


Hooks = Iterable[tuple[nn.Module, Callable[..., Any]]]


@contextmanager
def hooked(forward: Hooks = (), pre: Hooks = ()) -> Iterator[None]:
    """Forward hooks and forward pre-hooks (called with kwargs) as ``(module, hook)`` pairs; removed in ``finally``."""
    handles = []
    try:
        for module, hook in forward:
            handles.append(module.register_forward_hook(hook))
        for module, hook in pre:
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_output(output: Any) -> torch.Tensor:
    """The hidden state a block returns: a tensor (transformers 5 llama-likes) or the first item of a tuple."""
    return output[0] if isinstance(output, tuple) else output


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``model.generate`` computes them: ``[batch, seq]``."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def run_layers(
    model: nn.Module,
    input_ids: torch.Tensor,
    layers: Sequence[int],
    *,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    use_cache: bool = True,
    keep: int | None = 1,
    select: torch.Tensor | None = None,
) -> LayerOutputs:
    """One forward pass that returns the residual stream of ``layers`` at the last ``keep`` positions.

    Only ``max(layers)`` blocks run: when a strategy reads no layer beyond ``E < L``, the blocks after ``E`` are
    skipped (and their KV cache is never filled, which is fine as long as every pass of that generation reads the
    same layers).

    Args:
        input_ids: ``[batch, seq]`` new tokens (the whole prompt at prefill, one token per step after).
        layers: sorted, distinct layer numbers in ``0..L``.
        attention_mask: ``[batch, past + seq]`` 1 for real tokens, 0 for (left) padding; ``None`` means all ones.
        position_ids: ``[batch, seq]``; ``None`` lets the model count from the cache length.
        cache: the KV cache from the previous pass, or ``None`` at prefill (``use_cache``: build and return one).
        keep: how many trailing positions to keep; ``None`` keeps all.
        select: ``[batch, seq]`` bool, the positions to keep (instead of ``keep``), copied out of each layer as it
            is computed into one ``[1, n_selected, len(layers), d_model]`` tensor (a single copy in memory).

    Returns :class:`LayerOutputs` with ``hidden: [batch, keep or seq, len(layers), d_model]``.
    """
    parts = model_parts(model)
    layers = tuple(layers)
    # Layer 0 is read by a pre-hook on block 0, so at least one block must run.
    depth = max(1, max(layers)) if layers else parts.num_layers
    captured: dict[int, torch.Tensor] = {}
    kept: list[torch.Tensor] = []  # with select: [1, n_selected, len(layers), d_model], filled layer by layer

    def store(layer: int, hidden: torch.Tensor) -> None:
        if select is None:
            captured[layer] = hidden if keep is None else hidden[:, -keep:]
            return
        if not kept:  # one copy of the selected rows: the block outputs are neither held nor stacked again
            kept.append(hidden.new_empty(1, int(select.sum()), len(layers), hidden.shape[-1]))
        kept[0][0, :, layers.index(layer)] = hidden[select]

    def read_input(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        store(0, args[0] if args else kwargs["hidden_states"])

    def read_output(layer: int, _module: nn.Module, _args: tuple, output: Any) -> None:
        store(layer, block_output(output))

    kwargs: dict[str, Any] = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if cache is not None:
        kwargs[parts.cache_kwarg] = cache
    forward = [(parts.blocks[layer - 1], partial(read_output, layer)) for layer in layers if layer > 0]
    pre = [(parts.blocks[0], read_input)] if 0 in layers else []
    with hooked(forward, pre), truncated_blocks(parts, depth):
        outputs = parts.base(**kwargs)
    new_cache = getattr(outputs, "cache", None) if use_cache else None
    if use_cache and new_cache is None:
        new_cache = getattr(outputs, "past_key_values", None)
    hidden = kept[0] if kept else torch.stack([captured[layer] for layer in layers], dim=2)
    return LayerOutputs(hidden=hidden, layers=layers, cache=new_cache)
