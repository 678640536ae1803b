"""CALM's state propagation: keys/values for the layers an early exit skipped, from the exited hidden state.

When a token exits at layer ``e`` (after ``e`` blocks), CALM (Schuster et al. 2022, arXiv 2207.07061, sec. 3.2)
copies the exited hidden state ``h_e`` up to the skipped layers and computes their keys and values from it, so later
tokens find a complete cache. Here each skipped block ``j`` (``e <= j < L``) calls *its own* attention module on its
own pre-attention norm of ``h_e``, with the same keyword arguments the model passed to its blocks in this pass
(attention mask, position embeddings, cache, position ids: captured by forward pre-hooks). The attention appends the
position's keys/values to cache layer ``j`` as it always does; its output is thrown away.

Where this departs from CALM: CALM runs only the key/value projections of the skipped layers. Calling the whole
attention module also computes the query and output projections and the attention of one position over the cache,
which are wasted; in exchange lenssample never re-implements any architecture's attention (rotary embeddings,
q/k norms, sliding windows, soft-capping stay the model's business). The waste is small next to what is saved: the
skipped blocks' MLPs never run (on the default model a block's q and o projections hold 0.66 M weights, its MLP
2.65 M, and decoding is bound by reading weights).

Which kwargs a skipped block gets: those of the latest block that ran in this pass *with the same layer type*
(``config.layer_types``; Gemma-2/3 alternate sliding-window and full attention with different masks and rotary
embeddings). Architectures without ``layer_types`` have one type.
"""

from __future__ import annotations

import inspect
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import torch
from torch import nn

from lenssample.model.adapters import ModelParts, block_attentions
from lenssample.model.capture import hooked


def _keywords(function: Any) -> set[str] | None:
    """The keyword names ``function`` accepts, ``None`` when it takes ``**kwargs``."""
    signature = inspect.signature(function)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return set(signature.parameters)


def _named_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The block call's arguments by name, without the first one (the hidden state); ``**kwargs`` flattened."""
    hidden_name = next(iter(signature.parameters))
    named: dict[str, Any] = {}
    for name, value in signature.bind_partial(*args, **kwargs).arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL and name != hidden_name:
            named[name] = value
    return named


class StatePropagation:
    """Fills the skipped layers' keys/values of an early-exited position (see the module docstring).

    ``ValueError`` when the architecture's adapter names no attention module, or when a layer type of blocks
    ``min_layer..L-1`` (``min_layer``: the lowest exit layer) occurs nowhere among blocks ``0..min_layer-1`` (the
    blocks that always run).
    """

    def __init__(self, parts: ModelParts, min_layer: int) -> None:
        model_type = parts.model.config.model_type
        try:
            self.attentions = block_attentions(parts)
        except ValueError as err:
            raise ValueError(
                f"EarlyExit(skipped_kv='propagate') is not supported for model_type {model_type!r} ({err}); use "
                "skipped_kv='recompute'"
            ) from err
        self.blocks, num_layers = parts.blocks, parts.num_layers
        types = getattr(parts.model.config, "layer_types", None) or ["attention"] * num_layers
        self.layer_types = list(types)[:num_layers]
        missing = sorted(set(self.layer_types[min_layer:]) - set(self.layer_types[:min_layer]))
        if missing:
            first = min(i for i, t in enumerate(self.layer_types) if t in missing)
            raise ValueError(
                f"EarlyExit(min_layer={min_layer}, skipped_kv='propagate'): blocks of type {missing[0]!r} may be "
                f"skipped, but none runs below layer {min_layer}, so there are no mask/position embeddings to give "
                f"them; pass min_layer >= {first + 1} or skipped_kv='recompute'"
            )
        self._block_signatures = [inspect.signature(block.forward) for block in self.blocks]
        # Per block, the keywords its attention accepts (None: any, it takes **kwargs).
        self._attention_params = [_keywords(found.attention.forward) for found in self.attentions]
        self._kwargs: dict[str, dict[str, Any]] = {}  # layer type -> kwargs of its latest block in this pass

    def capture(self) -> AbstractContextManager[None]:
        """Forward pre-hooks that record each block's keyword arguments during a pass; removed in ``finally``."""
        return hooked(pre=[(block, partial(self._record, index)) for index, block in enumerate(self.blocks)])

    def _record(self, index: int, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        if index == 0:
            self._kwargs.clear()  # a new pass: masks and positions of the previous one are stale
        self._kwargs[self.layer_types[index]] = _named_arguments(self._block_signatures[index], args, kwargs)

    def fill(self, hidden: torch.Tensor, layer: int) -> int:
        """Append keys/values computed from ``hidden: [batch, seq, d_model]`` (the exited residual stream of this
        pass's positions) to the cache layers ``layer..L-1``; blocks ``0..layer-1`` ran in the pass being completed
        (inside :meth:`capture`). Returns the number of attention modules called (``L - layer``)."""
        for index in range(layer, len(self.blocks)):
            kwargs = self._kwargs[self.layer_types[index]]  # __init__ checked a block of each type runs below
            allowed = self._attention_params[index]
            if allowed is not None:
                kwargs = {key: value for key, value in kwargs.items() if key in allowed}
            found = self.attentions[index]
            normed = found.norm(hidden) if found.norm is not None else hidden
            found.attention(normed, **kwargs)  # appends to the cache; the attention output is not needed
        self._kwargs.clear()  # holds this pass's masks and cache; the next pass captures its own
        return len(self.blocks) - layer
