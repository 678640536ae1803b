"""Per-layer statistics behind the logit-lens observations (nostalgebraist, 2020), over real text.

For every layer ``l`` (0 = embeddings, ``L`` = final) and every scored position ``t`` of a text, with ``p_l`` the
lens distribution at layer ``l`` and ``x_{t+1}`` the actual next token:

- ``kl``: KL(p_L || p_l) in nats (how far the layer is from the model's output);
- ``agree_final``: top-1 of ``p_l`` equals the top-1 of ``p_L``;
- ``next_rank``: rank of ``x_{t+1}`` under ``p_l`` (0 = top-1); ``next_top1``: rank 0; ``next_nll``: -log p_l(x_{t+1});
- ``frequent``: the top-1 of ``p_l`` is among the ``n_frequent`` most frequent tokens of the text;
- ``input_top1``: the top-1 of ``p_l`` is the *current input* token ``x_t``; ``input_rank``: its rank;
- ``entropy``: entropy of ``p_l`` in nats.

:func:`layer_statistics` returns per-position arrays ``[n_positions, n_layers]`` so callers can average, take
medians or bootstrap. Projections are chunked over positions so memory stays bounded for any vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.lens.passes import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_OUTPUT_BYTES,
    check_chunk_bytes,
    check_output_bytes,
    check_window,
    lens_pass,
)
from lenssample.lens.tuned import load_lens
from lenssample.stats import entropy, kl_divergence, token_rank
from lenssample.validation import check_length, check_token_ids

STATISTICS = ("kl", "agree_final", "next_rank", "next_top1", "next_nll", "frequent", "input_top1", "input_rank",
              "entropy")  # fmt: skip


@dataclass
class LayerStatistics:
    """Per-position, per-layer statistics (see the module docstring for each name): ``values`` maps a name to a
    ``[n_positions, n_layers]`` float64 array over ``layers`` ``0..L``."""

    layers: tuple[int, ...]
    values: dict[str, np.ndarray]

    def mean(self, name: str) -> np.ndarray:
        """``[n_layers]`` mean over positions."""
        return self.values[name].mean(axis=0)

    def median(self, name: str) -> np.ndarray:
        """``[n_layers]`` median over positions."""
        return np.median(self.values[name], axis=0)

    def first_layer_reaching(self, name: str, level: float) -> int | None:
        """The first layer whose mean ``name`` is at least ``level`` (``None`` if none)."""
        return next(
            (int(layer) for layer, value in zip(self.layers, self.mean(name)) if value >= level), None
        )

    @staticmethod
    def concatenate(parts: Sequence[LayerStatistics]) -> LayerStatistics:
        """Join statistics of several texts (same layers) along positions."""
        if not parts:
            raise ValueError("no statistics to join; score at least one text")
        return LayerStatistics(
            layers=parts[0].layers,
            values={k: np.concatenate([p.values[k] for p in parts]) for k in parts[0].values},
        )


def frequent_tokens(token_ids: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """The ``n`` most frequent token ids over some tokenised texts: ``[n]`` (fewer if the texts have fewer)."""
    counts = torch.bincount(torch.cat([t.reshape(-1) for t in token_ids]))
    return torch.argsort(counts, descending=True, stable=True)[: min(n, int((counts > 0).sum()))]


@torch.inference_mode()
def layer_statistics(model: nn.Module, input_ids: torch.Tensor, *, lens: Lens | None = None,
                     frequent: torch.Tensor | None = None, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                     max_output_bytes: int = DEFAULT_OUTPUT_BYTES, window: int | None = None,
                     stride: int | None = None) -> LayerStatistics:  # fmt: skip
    """Statistics of every layer at every position ``0..seq-2`` of one text (``input_ids``: ``[seq]`` or ``[1, seq]``,
    seq >= 2): :class:`LayerStatistics` with ``[seq - 1, L + 1]`` arrays. ``frequent``: ``[n]`` ids counted as
    "frequent tokens" (see :func:`frequent_tokens`); without it there is no ``frequent`` statistic.
    ``max_output_bytes``: refuse, before any work, when the arrays (or the residual streams read) would be
    larger. ``window``, ``stride``: read the text in windows (flat memory, as :func:`lenssample.score`; each position
    sees at least ``window - stride`` tokens of context); ``None``: one exact pass."""
    check_chunk_bytes(max_chunk_bytes)
    window, stride = check_window(window, stride)
    lens = load_lens(lens, model)
    ids = check_token_ids(input_ids, lens.vocab_size, min_length=2)
    if ids.shape[0] != 1:
        raise ValueError(f"input_ids has {ids.shape[0]} rows; layer_statistics reads one text ([seq] or [1, seq]): "
                         "call it per text and join them with LayerStatistics.concatenate")
    if frequent is not None:
        frequent = check_token_ids(frequent, lens.vocab_size, name="frequent").reshape(-1)
    ids = ids.to(lens.parts.unembed.weight.device)
    check_length(model, ids.shape[1], window=window)
    layers = tuple(range(lens.num_layers + 1))
    fix = "pass shorter texts (LayerStatistics.concatenate joins the statistics of several)"
    check_output_bytes("layer_statistics' arrays", (ids.shape[1] - 1, len(layers), len(STATISTICS)), 8,
                       max_output_bytes, fix)  # fmt: skip
    select = torch.ones_like(ids, dtype=torch.bool)
    select[:, -1] = False  # the last position has no next token
    passed = lens_pass(model, ids, layers, select=select, max_output_bytes=max_output_bytes, window=window,
                       stride=stride)  # fmt: skip
    targets, inputs = ids[0, 1:], ids[0, :-1]
    is_frequent = None
    if frequent is not None:
        is_frequent = torch.zeros(lens.vocab_size, dtype=torch.bool, device=ids.device)
        is_frequent[frequent.to(ids.device)] = True
    out: dict[str, list[torch.Tensor]] = {name: [] for name in STATISTICS}
    for chunk in passed.chunks(lens, max_chunk_bytes=max_chunk_bytes):
        log_probs = torch.log_softmax(chunk.logits, dim=-1)  # [c, n, V]
        rows = slice(chunk.start, chunk.stop)
        top1 = log_probs.argmax(-1)  # [c, n]
        next_rank = token_rank(log_probs, targets[rows, None])
        out["kl"].append(kl_divergence(log_probs[:, -1:], log_probs))
        out["agree_final"].append((top1 == top1[:, -1:]).float())
        out["next_rank"].append(next_rank.float())
        out["next_top1"].append((top1 == targets[rows, None]).float())
        out["next_nll"].append(
            -log_probs.gather(-1, targets[rows, None, None].expand(-1, len(layers), 1))[..., 0]
        )
        out["input_top1"].append((top1 == inputs[rows, None]).float())
        out["input_rank"].append(token_rank(log_probs, inputs[rows, None]).float())
        out["entropy"].append(entropy(log_probs))
        if is_frequent is not None:
            out["frequent"].append(is_frequent[top1].float())
    values = {name: torch.cat(parts).double().cpu().numpy() for name, parts in out.items() if parts}
    return LayerStatistics(layers=layers, values=values)
