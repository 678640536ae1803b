"""The one lens pass: run the layers a caller needs once, keep chosen positions, project them in bounded chunks.

Everything that needs lens outputs at many positions goes through :func:`lens_pass` (scoring and the evaluation
harness, layer statistics, trajectories, lens comparisons, fitted ensemble weights, ``apply_lens``)::

    lp = lens_pass(model, input_ids, layers=(10, 20, 30), select=mask)   # one forward pass, blocks up to 30
    for chunk in lp.chunks(lens):                                         # one matrix product per chunk
        chunk.logits                                                      # [chunk rows, 3, vocab]

Memory: the residual streams of the kept positions (``[rows, n_layers, d_model]``) stay; the logits exist only one
chunk at a time, sized so that ``rows x n_layers x vocab x 4 bytes x copies`` stays under ``max_chunk_bytes``
(``copies``: how many tensors of that size the caller makes from a chunk, e.g. log-probs and products).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.model.capture import position_ids_from_mask, run_layers

DEFAULT_CHUNK_BYTES = 128 * 2**20


@dataclass
class LensChunk:
    """Lens logits of rows ``start:stop`` of a :class:`LensPass`: ``logits [stop - start, n_layers, vocab]``."""

    start: int
    stop: int
    logits: torch.Tensor


@dataclass
class LensPass:
    """Residual streams of ``layers`` at the selected positions of one forward pass.

    Attributes:
        hidden: ``[rows, n_layers, d_model]``, rows in row-major order of the selected ``(batch, position)`` pairs.
        layers: the layer number of each slice along dimension 1 (sorted, distinct).
    """

    hidden: torch.Tensor
    layers: tuple[int, ...]

    def chunks(
        self, lens: Lens, *, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, copies: int = 3
    ) -> Iterator[LensChunk]:
        """Project the rows through ``lens``, one chunk at a time (all layers of a chunk in one product), with as
        many rows per chunk as keep ``copies`` float32 tensors of lens logits within ``max_chunk_bytes``."""
        size = max(1, int(max_chunk_bytes // (len(self.layers) * lens.vocab_size * 4 * copies)))
        for start in range(0, self.hidden.shape[0], size):
            stop = min(self.hidden.shape[0], start + size)
            yield LensChunk(start=start, stop=stop, logits=lens(self.hidden[start:stop], self.layers))


def lens_pass(model: nn.Module, input_ids: torch.Tensor, layers: Sequence[int], *, attention_mask: torch.Tensor | None = None,
              select: torch.Tensor | None = None) -> LensPass:  # fmt: skip
    """One forward pass (no cache) that keeps the residual streams of ``layers`` at the selected positions.

    Only ``max(layers)`` blocks run. Left or right padding is handled with ``attention_mask`` (positions count real
    tokens only, as ``model.generate`` counts them).

    Args:
        model: a supported causal LM.
        input_ids: ``[batch, seq]`` on the model's device.
        layers: sorted, distinct layer numbers in ``0..L``.
        attention_mask: ``[batch, seq]`` 1 for tokens, 0 for padding; ``None``: no padding.
        select: ``[batch, seq]`` bool, the positions to keep; ``None`` keeps all of them.

    Returns:
        :class:`LensPass` with ``hidden: [n_selected, len(layers), d_model]``.
    """
    layers = tuple(layers)
    assert list(layers) == sorted(set(layers)), "lens_pass takes sorted, distinct layers"
    position_ids = position_ids_from_mask(attention_mask) if attention_mask is not None else None
    out = run_layers(model, input_ids, layers, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False, keep=None)  # fmt: skip
    hidden = out.hidden[select] if select is not None else out.hidden.reshape(-1, *out.hidden.shape[2:])
    return LensPass(hidden=hidden, layers=layers)
