"""Run a lens over a whole input: the logit-lens table of layers x positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lenssample.lens.base import Lens, as_lens
from lenssample.lens.capture import run_layers


@dataclass
class LensOutput:
    """Lens logits of several layers at several positions.

    Attributes:
        logits: ``[batch, n_positions, n_layers, vocab]`` float32.
        layers: layer number of each slice along dimension 2.
        positions: input position of each slice along dimension 1 (the logits there predict position + 1).
    """

    logits: torch.Tensor
    layers: tuple[int, ...]
    positions: tuple[int, ...]

    def log_probs(self) -> torch.Tensor:
        """``[batch, n_positions, n_layers, vocab]`` log-softmax of :attr:`logits`."""
        return torch.log_softmax(self.logits, dim=-1)


@torch.inference_mode()
def apply_lens(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    positions: Sequence[int] | None = None,
    lens: Lens | None = None,
    attention_mask: torch.Tensor | None = None,
) -> LensOutput:
    """Lens logits for ``layers`` at ``positions`` of ``input_ids``, all projected in one matrix product.

    Args:
        model: a supported Hugging Face causal LM.
        input_ids: ``[batch, seq]`` or ``[seq]``.
        layers: layer numbers in ``0..L``; default all of them.
        positions: positions in ``0..seq-1`` (negative counts from the end); default all.
        lens: a :class:`~lenssample.lens.base.Lens`; default the logit lens.
        attention_mask: ``[batch, seq]``, optional.

    Returns:
        :class:`LensOutput`; ``logits[:, :, -1]`` at layer ``L`` equals ``model(input_ids).logits``.
    """
    lens = as_lens(model, lens)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int):
        raise TypeError(
            "input_ids must be a LongTensor of token ids; tokenize text with the model's tokenizer first"
        )
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(
            f"input_ids has shape {tuple(input_ids.shape)}; pass [batch, seq] token ids with seq >= 1"
        )
    seq = input_ids.shape[1]
    layers = tuple(range(lens.num_layers + 1)) if layers is None else lens.check_layers(layers)
    if not layers:
        raise ValueError("layers is empty; pass at least one layer number")
    if positions is None:
        positions = tuple(range(seq))
    else:
        positions = tuple(positions)
        for p in positions:
            if not -seq <= p < seq:
                raise ValueError(
                    f"positions contains {p}, but the input has {seq} positions; use 0..{seq - 1}"
                )
        positions = tuple(p % seq for p in positions)
    position_ids = None
    if attention_mask is not None:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    out = run_layers(
        model,
        input_ids,
        sorted(set(layers)),
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        keep=None,
    )
    order = [out.layers.index(layer) for layer in layers]
    hidden = out.hidden[:, list(positions)][:, :, order]
    return LensOutput(logits=lens(hidden, layers), layers=layers, positions=positions)
