"""Block and cache surgery: run fewer blocks, stand in for blocks, crop the KV cache.

Every change to the model happens inside a context manager that restores it in ``finally``, whatever happens
inside, so a model is never left truncated or with a stub in its block list. The model's own ``forward`` still
builds masks and position embeddings; the stubs only replace what a block computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lenssample.model.adapters import ModelParts


def _blocks_attr(parts: ModelParts) -> tuple[nn.Module, str]:
    """The module that holds the block list, and the attribute name it is held under."""
    for name, child in parts.base.named_modules():
        if child is parts.blocks:
            owner_name, _, attr = name.rpartition(".")
            owner = parts.base.get_submodule(owner_name) if owner_name else parts.base
            return owner, attr
    raise AssertionError("blocks not found under the base model")


@contextmanager
def truncated_blocks(parts: ModelParts, depth: int) -> Iterator[None]:
    """Temporarily keep only the first ``depth`` blocks, so a forward pass computes no more than that."""
    if depth >= parts.num_layers:
        yield
        return
    owner, attr = _blocks_attr(parts)
    full = getattr(owner, attr)
    setattr(owner, attr, nn.ModuleList(list(full)[:depth]))
    try:
        yield
    finally:
        setattr(owner, attr, full)


@contextmanager
def replaced_blocks(parts: ModelParts, stubs: dict[int, nn.Module]) -> Iterator[None]:
    """Swap ``stubs`` into the block list (block index -> module); the real blocks are put back in ``finally``."""
    saved = {index: parts.blocks[index] for index in stubs}
    try:
        for index, stub in stubs.items():
            parts.blocks[index] = stub
        yield
    finally:
        for index, block in saved.items():
            parts.blocks[index] = block


def crop_to(cache: Any, length: int, layers: range | None = None) -> None:
    """Crop the cache layers (all, or ``layers``) of a ``DynamicCache`` to at most ``length`` positions."""
    for index in layers if layers is not None else range(len(cache.layers)):
        layer = cache.layers[index]
        excess = layer.get_seq_length() - length
        if excess > 0:
            layer.crop(-excess)


class SkippedBlock(nn.Module):
    """Stands in for a skipped block: the identity (its cache layer is left untouched)."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class ReplayedBlock(nn.Module):
    """Stands in for a block whose keys/values for these positions were already computed: appends ``keys`` and
    ``values`` (``[batch, heads, positions, head_dim]``) to its ``cache_layer`` and runs nothing. Returns ``output``
    (``[batch, positions, d_model]``, the state the real blocks above continue from), or, when ``None``, its input.
    """

    def __init__(
        self, cache_layer: Any, keys: torch.Tensor, values: torch.Tensor, output: torch.Tensor | None
    ) -> None:
        super().__init__()
        self.cache_layer, self.keys, self.values, self.output = cache_layer, keys, values, output

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.cache_layer.update(self.keys, self.values)
        return hidden_states if self.output is None else self.output
