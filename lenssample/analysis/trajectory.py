"""The logit-lens trajectory of a text: per layer and position, what the lens predicts and how it compares.

``trajectory(model, tokenizer, text)`` runs the model once, reads the residual stream of the chosen layers at every
position, and projects all layers of a chunk of positions through the lens in one matrix product (chunks keep
memory bounded for long texts). It returns plain numpy arrays of shape ``[n_layers, n_positions]`` (rows = layers,
in the order given, columns = positions), ready for :mod:`lenssample.plotting.figures` or for a notebook's own plots.

Statistics, at layer ``l`` and position ``t`` (the distributions predict token ``t + 1``; logs are natural, so
KL, entropy and cross-entropy are in nats):

* ``top_probs``: probability of the lens's top-1 token ``top_ids``.
* ``final_rank``: rank (1 = top) under layer ``l`` of the final layer's top-1 token; ties count in its favour,
  i.e. rank = 1 + the number of tokens with a strictly higher probability.
* ``kl``: KL(final ‖ layer) = sum_x p_L(x) (log p_L(x) - log p_l(x)).
* ``entropy``: -sum_x p_l(x) log p_l(x).
* ``xent``: -log p_l(next input token); NaN at the last position, which has no next token.

The final layer ``L`` is always projected (the statistics compare against it) even when ``layers`` omits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from lenssample.lens.apply import check_positions
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
from lenssample.validation import check_int, check_length, check_token_ids, check_tokenizer, is_int


@dataclass
class Trajectory:
    """Per-layer, per-position lens statistics of one text.

    Attributes:
        layers: layer number of each row (0 = embeddings, ``num_layers`` = final layer).
        positions: input position of each column (the column's distributions predict position + 1).
        num_layers: ``L``, the model's number of blocks.
        input_ids: ``[seq]`` token ids of the whole text.
        input_tokens: ``[n_positions]`` readable input token at each column.
        next_ids: ``[n_positions]`` the actual next token id, -1 at the text's last position.
        next_tokens: ``[n_positions]`` readable next token ("" where there is none).
        final_ids: ``[n_positions]`` the final layer's top-1 token.
        matches: ``[n_positions]`` bool, the final layer's top-1 token equals the actual next token.
        top_ids: ``[n_layers, n_positions]`` the lens's top-1 token id.
        top_tokens: ``[n_layers, n_positions]`` (object array of str) readable top-1 token.
        top_probs: ``[n_layers, n_positions]`` its probability.
        final_rank: ``[n_layers, n_positions]`` rank of the final layer's top-1 token (1 = top).
        kl: ``[n_layers, n_positions]`` KL(final ‖ layer), nats.
        entropy: ``[n_layers, n_positions]`` entropy of the layer's distribution, nats.
        xent: ``[n_layers, n_positions]`` cross-entropy of the actual next token, nats (NaN where there is none).
        topk_ids: ``[n_layers, n_positions, k]`` the lens's top-k token ids, most probable first.
        topk_tokens: ``[n_layers, n_positions, k]`` (object array of str) readable top-k tokens.
        topk_probs: ``[n_layers, n_positions, k]`` their probabilities.
        lens_name: class name of the lens used (for titles).
    """

    layers: tuple[int, ...]
    positions: tuple[int, ...]
    num_layers: int
    input_ids: np.ndarray
    input_tokens: np.ndarray
    next_ids: np.ndarray
    next_tokens: np.ndarray
    final_ids: np.ndarray
    matches: np.ndarray
    top_ids: np.ndarray
    top_tokens: np.ndarray
    top_probs: np.ndarray
    final_rank: np.ndarray
    kl: np.ndarray
    entropy: np.ndarray
    xent: np.ndarray
    topk_ids: np.ndarray
    topk_tokens: np.ndarray
    topk_probs: np.ndarray
    lens_name: str = "LogitLens"

    def window(self, start: int | None = None, end: int | None = None) -> Trajectory:
        """The columns whose *input position* lies in ``[start, end)`` (Python slice semantics on positions: negative
        counts from the end of the text; ``None``, from the first or to the last column)."""
        seq = len(self.input_ids)
        lo = 0 if start is None else (start + seq if start < 0 else start)
        hi = seq if end is None else (end + seq if end < 0 else end)
        keep = [i for i, p in enumerate(self.positions) if lo <= p < hi]
        if not keep:
            raise ValueError(
                f"window start={start}, end={end} selects no position of this trajectory (positions "
                f"{self.positions[0]}..{self.positions[-1]}); pick a range inside it"
            )
        return self._columns(keep)

    def last(self, n: int) -> Trajectory:
        """The last ``n`` columns (``n >= 1``)."""
        check_int(n, field="last", low=1, fix="It is the number of positions to keep.")
        return self._columns(list(range(max(0, len(self.positions) - n), len(self.positions))))

    def _columns(self, keep: list[int]) -> Trajectory:
        changes: dict[str, Any] = {"positions": tuple(self.positions[i] for i in keep)}
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, np.ndarray) or f.name == "input_ids":
                continue
            changes[f.name] = value[..., keep] if value.ndim == 1 else value[:, keep]
        return replace(self, **changes)

    def layer_summary(self) -> dict[str, np.ndarray]:
        """Per-layer means over the columns: ``kl``, ``top1`` (agreement with the final layer's top-1 token),
        ``xent`` (over columns with a next token), ``entropy``; each ``[n_layers]``.

        The shape of input :func:`lenssample.plotting.figures.plot_layer_curves` takes for one lens.
        """
        has_next = self.next_ids >= 0
        xent = self.xent[:, has_next].mean(axis=1) if has_next.any() else np.full(len(self.layers), np.nan)
        top1 = (self.top_ids == self.final_ids[None]).mean(axis=1)
        return {"kl": self.kl.mean(axis=1), "top1": top1, "xent": xent, "entropy": self.entropy.mean(axis=1)}


def readable_token(tokenizer: Any, token_id: int, width: int = 10) -> str:
    """A token as text with whitespace made visible (space ␣, newline ↵, tab ⇥), cut to ``width``."""
    text = tokenizer.decode([int(token_id)])
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= width else text[: width - 1] + "…"


def _as_ids(tokenizer: Any, text: Any, device: torch.device) -> torch.Tensor:
    """``text`` (a string, or token ids) as a ``[seq]`` LongTensor."""
    if isinstance(text, str) and (not text or tokenizer is None):
        problem = "text is empty" if not text else "text is a string but tokenizer is None"
        raise ValueError(
            f"{problem}; pass some text (at least one token) and the model's tokenizer, or token ids"
        )
    if isinstance(text, str):
        text = tokenizer(text, return_tensors="pt").input_ids[0]
    elif isinstance(text, Sequence) and all(is_int(t) for t in text):
        text = torch.tensor(list(text), dtype=torch.long)
    elif not isinstance(text, torch.Tensor):
        raise TypeError(
            f"text must be a string or token ids (list of int, LongTensor), got {type(text).__name__}"
        )
    if text.dtype not in (torch.long, torch.int) or text.dim() == 0 or text.shape[:-1] not in ((), (1,)):
        raise ValueError(
            f"text is a tensor of shape {tuple(text.shape)} and dtype {text.dtype}; pass one text as [seq] or "
            "[1, seq] integer token ids"
        )
    if text.numel() == 0:
        raise ValueError("text has no tokens; pass some text (at least one token) to look at")
    return text.reshape(-1).long().to(device)


@torch.inference_mode()
def trajectory(model: nn.Module, tokenizer: Any, text: str | Sequence[int] | torch.Tensor, *,
               lens: Lens | None = None, layers: Sequence[int] | None = None,
               positions: Sequence[int] | None = None, top_k: int = 5, token_width: int = 12,
               max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, max_output_bytes: int = DEFAULT_OUTPUT_BYTES,
               window: int | None = None, stride: int | None = None) -> Trajectory:  # fmt: skip
    """Lens statistics of every chosen layer at every chosen position of ``text``: a :class:`Trajectory` with
    ``[n_layers, n_positions]`` arrays.

    ``text`` is a non-empty string or token ids (``[seq]`` list / LongTensor; ``tokenizer`` may then be ``None``,
    and tokens read ``#id``). Rows are ``layers`` (``0..L``), columns ``positions`` (negative counts from the end);
    default all of them. Each cell keeps its ``top_k`` tokens, readable tokens are cut to ``token_width``
    characters, and a chunk of lens logits takes at most ``max_chunk_bytes`` (positions x layers x vocab x 4 bytes
    x 4). The result (and the residual streams read) must fit in ``max_output_bytes``, or the call is refused
    before any work. ``window``: read the text in windows of at most this many tokens, each adding ``stride`` new
    positions (default ``window // 2``): memory flat in text length beyond the result itself, texts longer than the
    model's maximum positions allowed, each position seeing at least ``window - stride`` tokens of context
    (:mod:`lenssample.lens.passes`); ``None`` (default): one exact pass.

    Example:
        >>> model, tok = lenssample.load_model()  # doctest: +SKIP
        >>> traj = lenssample.analysis.trajectory(model, tok, "The capital of France is")  # doctest: +SKIP
        >>> traj.top_tokens[-1, -1], traj.kl[:, -1]  # doctest: +SKIP
    """
    check_chunk_bytes(max_chunk_bytes)
    window, stride = check_window(window, stride)
    lens = load_lens(lens, model)
    check_tokenizer(model, tokenizer, lens.vocab_size)
    check_int(
        top_k, field="top_k", low=1, high=lens.vocab_size, fix="The upper bound is the vocabulary size."
    )
    check_int(token_width, field="token_width", low=1, fix="It is the width readable tokens are cut to, e.g. 12.")
    device = next(model.parameters()).device
    ids = check_token_ids(_as_ids(tokenizer, text, device), lens.vocab_size, name="text")[0]
    seq = ids.numel()
    num_layers = lens.num_layers
    rows = tuple(range(num_layers + 1)) if layers is None else lens.check_layers(layers)
    if not rows:
        raise ValueError("layers is empty; pass at least one layer number, or None for all")
    if len(set(rows)) != len(rows):
        raise ValueError(f"layers={list(rows)} contains duplicates; pass each layer once")
    cols = check_positions(positions, seq, f"the text has {seq} tokens")
    if not cols:
        raise ValueError("positions is empty; pass at least one position, or None for all")

    # Per cell: six numbers, top_k ids and probabilities, 1 + top_k readable tokens (~80 bytes as Python str).
    cell = 32 + 12 * top_k + 80 * (1 + top_k)
    fix = "pass fewer layers= or positions=, or a smaller top_k"
    check_output_bytes("trajectory's arrays", (len(rows), len(cols)), cell, max_output_bytes, fix)
    # Causal model: positions after the last requested one cannot change the requested ones, so don't run them.
    run = ids[: max(cols) + 1][None]
    check_length(model, run.shape[1], window=window)
    projected = tuple(sorted(set(rows) | {num_layers}))  # the final layer is the reference of every statistic
    order = sorted(set(cols))  # the pass reads each position once, in text order
    select = torch.zeros_like(run, dtype=torch.bool)
    select[0, order] = True
    passed = lens_pass(model, run, projected, select=select, max_output_bytes=max_output_bytes, window=window,
                       stride=stride)  # fmt: skip
    row_index = torch.tensor([projected.index(layer) for layer in rows], device=device)
    final_index = projected.index(num_layers)
    next_ids = torch.tensor([int(ids[p + 1]) if p + 1 < seq else -1 for p in order], device=device)
    stats: dict[str, torch.Tensor] = {}  # [n_layers, n_positions, ...] each, filled chunk by chunk (one copy)
    for chunk in passed.chunks(lens, max_chunk_bytes=max_chunk_bytes, copies=4):
        log_probs = torch.log_softmax(chunk.logits, dim=-1)  # [n, n_proj, vocab]
        for key, value in _statistics(log_probs, row_index, final_index, next_ids[chunk.start : chunk.stop],
                                      top_k).items():  # fmt: skip
            if key not in stats:
                stats[key] = value.new_empty(value.shape[0], len(order), *value.shape[2:])
            stats[key][:, chunk.start : chunk.stop] = value
    if list(cols) != order:  # columns in the order asked for
        stats = {key: value[:, [order.index(p) for p in cols]] for key, value in stats.items()}
    next_ids = torch.tensor([int(ids[p + 1]) if p + 1 < seq else -1 for p in cols], device=device)
    stats = {key: value.cpu().numpy() for key, value in stats.items()}

    # Token ids as readable text ("" for -1: no next token; "#id" without a tokenizer).
    readable = np.vectorize(
        lambda t: (
            "" if t < 0 else readable_token(tokenizer, t, token_width) if tokenizer is not None else f"#{t}"
        ),
        otypes=[object],
    )

    next_np = next_ids.cpu().numpy()
    final_ids = stats.pop("final_ids")[0]
    return Trajectory(
        layers=rows, positions=cols, num_layers=num_layers, input_ids=ids.cpu().numpy(),
        input_tokens=readable(ids.cpu().numpy()[list(cols)]), next_ids=next_np, next_tokens=readable(next_np),
        final_ids=final_ids, matches=final_ids == next_np, top_tokens=readable(stats["top_ids"]),
        topk_tokens=readable(stats["topk_ids"]), lens_name=type(lens).__name__, **stats,
    )  # fmt: skip


def _statistics(
    log_probs: torch.Tensor, row_index: torch.Tensor, final_index: int, next_ids: torch.Tensor, top_k: int
) -> dict[str, torch.Tensor]:
    """Statistics of one chunk from ``log_probs: [n, n_proj, vocab]`` of the projected layers, ``row_index:
    [n_layers]`` (which projected layer each output row is) and ``next_ids: [n]`` (-1 where there is none):
    ``[n_layers, n]`` tensors (``[n_layers, n, k]`` for the top-k ones; ``final_ids`` is ``[1, n]``)."""
    final = log_probs[:, final_index]  # [n, vocab]
    final_ids = final.argmax(dim=-1)  # [n]
    lp = log_probs[:, row_index]  # [n, n_layers, vocab]
    topk_lp, topk_ids = lp.topk(top_k, dim=-1)
    rank = token_rank(lp, final_ids[:, None]) + 1
    has_next = next_ids >= 0
    xent = -lp.gather(-1, next_ids.clamp_min(0)[:, None, None].expand(-1, lp.shape[1], 1)).squeeze(-1)
    xent = torch.where(has_next[:, None], xent, torch.nan)
    out = {"top_ids": topk_ids[..., 0], "top_probs": topk_lp[..., 0].exp(), "final_rank": rank,
           "kl": kl_divergence(final[:, None], lp), "entropy": entropy(lp), "xent": xent, "topk_ids": topk_ids,
           "topk_probs": topk_lp.exp(), "final_ids": final_ids[:, None]}  # fmt: skip
    return {key: value.transpose(0, 1) for key, value in out.items()}  # layers first
