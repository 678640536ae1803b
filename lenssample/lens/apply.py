"""Run a lens over a whole input: the logit-lens table of layers x positions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.lens.passes import DEFAULT_OUTPUT_BYTES, check_output_bytes, lens_pass
from lenssample.lens.tuned import load_lens
from lenssample.validation import check_attention_mask, check_length, check_token_ids


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


def check_positions(positions: Sequence[int] | None, seq: int, what: str) -> tuple[int, ...]:
    """``positions`` in ``-seq..seq-1`` (negative counts from the end) as ``0..seq-1``; ``None``: all of them.
    ``what`` says what the positions index (``"the text has 12 tokens"``) in the error."""
    if positions is None:
        return tuple(range(seq))
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if isinstance(positions, str) or not isinstance(positions, Iterable):
        raise TypeError(f"positions={positions!r} must be a list of positions, e.g. [0, -1]")
    positions = tuple(positions)
    if not positions:
        raise ValueError("positions is empty; pass at least one position, or positions=None for all of them")
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, Integral) or not -seq <= p < seq:  # numpy ints are positions
            raise ValueError(f"positions contains {p!r}, but {what}; use 0..{seq - 1}")
    return tuple(int(p) % seq for p in positions)


@torch.inference_mode()
def apply_lens(model: nn.Module, input_ids: torch.Tensor, *, layers: Sequence[int] | None = None,
               positions: Sequence[int] | None = None, lens: Lens | None = None,
               attention_mask: torch.Tensor | None = None,
               max_output_bytes: int = DEFAULT_OUTPUT_BYTES) -> LensOutput:  # fmt: skip
    """Lens logits for ``layers`` at ``positions`` of ``input_ids``, all projected in one matrix product.

    Args:
        model: a supported Hugging Face causal LM.
        input_ids: ``[batch, seq]`` or ``[seq]``.
        layers: layer numbers in ``0..L`` (negative ones count from the end: -1 is ``L``); default all of them.
        positions: positions in ``0..seq-1`` (negative counts from the end); default all.
        lens: a :class:`~lenssample.lens.base.Lens`; default the logit lens.
        attention_mask: ``[batch, seq]``, optional.
        max_output_bytes: refuse (with the size and what to pass instead) when the logits would be larger.

    Returns:
        :class:`LensOutput`; ``logits[:, :, -1]`` at layer ``L`` equals ``model(input_ids).logits``.
    """
    lens = load_lens(lens, model)
    input_ids = check_token_ids(input_ids, lens.vocab_size).to(lens.parts.unembed.weight.device)
    attention_mask = check_attention_mask(attention_mask, input_ids)
    check_length(model, input_ids.shape[1])
    seq = input_ids.shape[1]
    layers = tuple(range(lens.num_layers + 1)) if layers is None else lens.check_layers(layers)
    if not layers:
        raise ValueError("layers is empty; pass at least one layer number")
    positions = check_positions(positions, seq, f"the input has {seq} positions")
    fix = "pass fewer layers= or positions=, or use lenssample.trajectory (top-k per cell) or lens_pass (chunks)"
    shape = (input_ids.shape[0], len(positions), len(layers), lens.vocab_size)
    check_output_bytes("apply_lens's logits", shape, 4, max_output_bytes, fix)
    wanted = tuple(sorted(set(layers)))
    select = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    select[:, sorted(set(positions))] = True
    out = lens_pass(model, input_ids, wanted, attention_mask=attention_mask, select=select,
                    max_output_bytes=max_output_bytes)  # fmt: skip
    hidden = out.hidden.reshape(input_ids.shape[0], -1, *out.hidden.shape[1:])  # [batch, kept, n, d]
    kept = sorted(set(positions))
    hidden = hidden[:, [kept.index(p) for p in positions]][:, :, [wanted.index(layer) for layer in layers]]
    return LensOutput(logits=lens(hidden, layers), layers=layers, positions=positions)
