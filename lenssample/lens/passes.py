"""The one lens pass: run the layers a caller needs once, keep chosen positions, project them in bounded chunks.

Everything that needs lens outputs at many positions goes through :func:`lens_pass` (scoring and the evaluation
harness, layer statistics, trajectories, lens comparisons, fitted ensemble weights, ``apply_lens``)::

    lp = lens_pass(model, input_ids, layers=(10, 20, 30), select=mask)   # one forward pass, blocks up to 30
    for chunk in lp.chunks(lens):                                         # one matrix product per chunk
        chunk.logits                                                      # [chunk rows, 3, vocab]

Memory: the residual streams of the kept positions (``[rows, n_layers, d_model]``) stay; the logits exist only one
chunk at a time, sized so that ``rows x n_layers x vocab x 4 bytes x copies`` stays under ``max_chunk_bytes``
(``copies``: how many tensors of that size the caller makes from a chunk, e.g. log-probs and products).

Budgets: what stays (the residual streams here, a caller's result for every position) is estimated before any work
by :func:`check_output_bytes`; past ``max_output_bytes`` (default :data:`DEFAULT_OUTPUT_BYTES`, 1 GiB) the call is
refused with the size and what to pass instead.

Windows (``window=W``, ``stride=S``): instead of one pass over the whole text, the model reads each row in windows
of at most ``W`` tokens, each window keeping (and projecting) only the ``S`` positions it is the first to reach, so
every position sees at least ``W - S`` tokens of context (all of them in the first window) and memory stays flat in
text length: the residual streams of one window at a time. Texts longer than the model's maximum positions can be
read this way. Positions count from 0 in every window; a row that starts with the model's BOS token gets it in
front of every window (models such as Gemma predict nonsense without it). Exact only where a position's whole
past fits in its window.
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.model.adapters import model_parts
from lenssample.model.capture import position_ids_from_mask, run_layers
from lenssample.validation import check_int

DEFAULT_CHUNK_BYTES = 128 * 2**20
DEFAULT_OUTPUT_BYTES = 2**30
_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1  # glibc's mallopt parameters


def check_chunk_bytes(max_chunk_bytes: Any) -> None:
    """Refuse a chunk budget that is not a positive number of bytes."""
    check_int(max_chunk_bytes, field="max_chunk_bytes", low=1, fix=f"It is a size in bytes, e.g. {DEFAULT_CHUNK_BYTES}.")


def check_window(window: Any, stride: Any) -> tuple[int | None, int | None]:
    """``(window, stride)`` checked: ``window`` an integer >= 2 or ``None`` (one pass over the whole text), ``stride``
    in ``1..window`` (default ``window // 2``: every position sees at least half a window of context)."""
    if window is None:
        if stride is not None:
            raise ValueError(f"stride={stride!r} without window=; pass window= too (stride is how many new "
                             "positions each window reads), or neither for one pass over the whole text")  # fmt: skip
        return None, None
    window = check_int(window, field="window", low=2, fix="It is the most tokens the model reads at once, e.g. 1024.")
    stride = check_int(max(1, window // 2) if stride is None else stride, field="stride", low=1, high=window,
                       fix="It is how many new positions each window reads; window - stride is the least context.")  # fmt: skip
    return window, stride


def window_spans(length: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, first_owned, end)`` per window over positions ``0..length-1``: the window reads ``start:end``
    (at most ``window`` tokens) and keeps ``first_owned:end`` (the positions it is the first to reach; the first
    window keeps all it reads, each later one ``stride``)."""
    spans, owned = [], 0
    while owned < length:
        end = min(length, owned + (window if owned == 0 else stride))
        spans.append((max(0, end - window), owned, end))
        owned = end
    return spans


def check_output_bytes(what: str, shape: Sequence[int], item_bytes: int, max_output_bytes: int, fix: str) -> None:  # fmt: skip
    """Refuse (``ValueError``) ``what``, an output of ``shape`` at ``item_bytes`` each, when it would take more than
    ``max_output_bytes``; the message gives its size and ``fix`` (what to pass instead)."""
    check_int(max_output_bytes, field="max_output_bytes", low=1, fix="It is a size in bytes, e.g. 2**30.")
    if (size := math.prod(shape) * item_bytes) > max_output_bytes:
        amount = f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.2f} MiB"
        raise ValueError(
            f"{what} would take {amount} ({' x '.join(map(str, shape))} x {item_bytes} bytes), over "
            f"max_output_bytes={max_output_bytes}; {fix}, or raise max_output_bytes"
        )


@functools.cache
def _glibc() -> Any:
    """The C library (glibc on Linux), opened once; ``None`` elsewhere."""
    return ctypes.CDLL(None) if sys.platform == "linux" else None


def release_freed_heap() -> None:
    """Hand the heap freed so far back to the system (glibc's ``malloc_trim``; elsewhere nothing): glibc keeps it
    resident otherwise, e.g. about 0.9 GB after compiling a decode step on the default model."""
    trim = getattr(_glibc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


_MMAP_DEFAULT = 32 * 2**20  # where glibc's own adjustment of the threshold ends
_mmap_threshold = [_MMAP_DEFAULT]  # glibc's threshold as set here (mallopt cannot read it back)
PART_BYTES = 16 * 2**20


def _set_mmap_threshold(mallopt: Any, value: int) -> None:
    mallopt(_M_MMAP_THRESHOLD, value)
    _mmap_threshold[0] = value


@contextmanager
def _mapped_big_blocks() -> Iterator[None]:
    """While lens chunks (and a lens pass's forward pass) run, have glibc serve blocks of 4 MiB or more by ``mmap``
    (each returned whole when freed).

    By default it serves blocks below 32 MiB from its heap once one that big has been freed, and chunk-sized
    temporaries alternating with the small results kept from chunk to chunk fragment that heap without bound: a
    31-layer trajectory of 384 positions (30 MiB chunks) grew the process by 10 GB, flat with this. Afterwards the
    threshold is 32 MiB, where glibc's own adjustment ends; without glibc (``mallopt``) nothing changes. The heap
    the forward pass freed is handed back first, or it would stay resident under the chunks' new mappings.
    """
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is not None:
        release_freed_heap()
        _set_mmap_threshold(mallopt, 4 * 2**20)
    try:
        yield
    finally:
        if mallopt is not None:
            _set_mmap_threshold(mallopt, _MMAP_DEFAULT)


@contextmanager
def reused_heap() -> Iterator[None]:
    """While the same temporaries of under 32 MiB are made and freed over and over (strategies combining a chunk's
    logits :data:`PART_BYTES` at a time, :func:`row_parts`), serve them from glibc's heap and keep what is freed there
    instead of unmapping or trimming it, so each is reused without the kernel faulting in and zeroing fresh pages.

    Mapped and unmapped by the hundred MB, the temporaries of thirteen strategies scoring one Gemma-3 window of 128
    tokens cost 46 s of kernel time (57 s wall); in parts of 16 MiB on the reused heap, 3 s (24 s wall). Nothing may
    be kept from inside (what fragmented the heap before :func:`_mapped_big_blocks`); the heap is trimmed after.
    """
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is None:
        yield
        return
    before = _mmap_threshold[0]
    _set_mmap_threshold(mallopt, _MMAP_DEFAULT)
    mallopt(_M_TRIM_THRESHOLD, 2**30)
    try:
        yield
    finally:
        mallopt(_M_TRIM_THRESHOLD, 128 * 2**10)  # glibc's default
        _set_mmap_threshold(mallopt, before)
        release_freed_heap()


def row_parts(rows: int, row_bytes: int) -> Iterator[slice]:
    """``rows`` in slices of as many rows as fit in :data:`PART_BYTES` at ``row_bytes`` each (at least one)."""
    step = max(1, PART_BYTES // max(1, row_bytes))
    for first in range(0, rows, step):
        yield slice(first, min(rows, first + step))


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
        with _mapped_big_blocks():
            for start in range(0, self.hidden.shape[0], size):
                stop = min(self.hidden.shape[0], start + size)
                yield LensChunk(start=start, stop=stop, logits=lens(self.hidden[start:stop], self.layers))


@dataclass
class WindowedLensPass:
    """The residual streams of ``layers`` at the selected positions, read window by window when :meth:`chunks`
    runs (see the module's Windows): rows and chunks in the same order as :class:`LensPass`'s.

    ``input_ids``, ``select``: ``[batch, seq]``; ``attention_mask``: ``[batch, seq]`` or ``None``."""

    model: nn.Module
    input_ids: torch.Tensor
    select: torch.Tensor
    attention_mask: torch.Tensor | None
    layers: tuple[int, ...]
    window: int
    stride: int

    def chunks(
        self, lens: Lens, *, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, copies: int = 3
    ) -> Iterator[LensChunk]:
        """As :meth:`LensPass.chunks`; the model runs one window at a time, only on windows that keep a row."""
        size = max(1, int(max_chunk_bytes // (len(self.layers) * lens.vocab_size * 4 * copies)))
        bos = getattr(self.model.config, "bos_token_id", None)
        done = 0  # rows yielded so far
        with _mapped_big_blocks():
            for row in range(self.input_ids.shape[0]):
                real = self.attention_mask[row].bool() if self.attention_mask is not None else slice(None)
                tokens, chosen = self.input_ids[row, real], self.select[row, real]
                lead = int(isinstance(bos, int) and tokens.numel() > 1 and int(tokens[0]) == bos)  # in every window
                for start, owned, end in window_spans(tokens.numel() - lead, self.window - lead,
                                                      min(self.stride, self.window - lead)):  # fmt: skip
                    keep = chosen[lead + owned if owned else 0 : lead + end]  # the first window keeps the BOS too
                    if not bool(keep.any()):
                        continue
                    read = torch.cat([tokens[:lead], tokens[lead + start : lead + end]])[None]
                    where = torch.zeros_like(read, dtype=torch.bool)
                    where[0, read.shape[1] - keep.numel() :] = keep
                    hidden = run_layers(self.model, read, self.layers, use_cache=False, keep=None,
                                        select=where).hidden[0]  # fmt: skip
                    for first in range(0, hidden.shape[0], size):
                        part = hidden[first : first + size]
                        yield LensChunk(start=done + first, stop=done + first + part.shape[0],
                                        logits=lens(part, self.layers))  # fmt: skip
                    done += hidden.shape[0]


def lens_pass(model: nn.Module, input_ids: torch.Tensor, layers: Sequence[int], *, attention_mask: torch.Tensor | None = None,
              select: torch.Tensor | None = None, max_output_bytes: int = DEFAULT_OUTPUT_BYTES,
              window: int | None = None, stride: int | None = None) -> LensPass | WindowedLensPass:  # fmt: skip
    """One forward pass (no cache) that keeps the residual streams of ``layers`` at the selected positions, or with
    ``window`` a :class:`WindowedLensPass` that reads them window by window (see the module's Windows).

    Only ``max(layers)`` blocks run. Left or right padding is handled with ``attention_mask`` (positions count real
    tokens only, as ``model.generate`` counts them).

    Args:
        model: a supported causal LM.
        input_ids: ``[batch, seq]`` on the model's device.
        layers: sorted, distinct layer numbers in ``0..L``.
        attention_mask: ``[batch, seq]`` 1 for tokens, 0 for padding; ``None``: no padding.
        select: ``[batch, seq]`` bool, the positions to keep; ``None`` keeps all of them.
        max_output_bytes: refuse (before running the model) when the kept residual streams would be larger.
        window, stride: read in windows of at most ``window`` tokens, each keeping ``stride`` new positions
            (:func:`check_window`); ``select`` must then be False on padding.

    Returns:
        :class:`LensPass` with ``hidden: [n_selected, len(layers), d_model]``, or the :class:`WindowedLensPass`.
    """
    layers = tuple(layers)
    assert list(layers) == sorted(set(layers)), "lens_pass takes sorted, distinct layers"
    select = torch.ones_like(input_ids, dtype=torch.bool) if select is None else select
    window, stride = check_window(window, stride)
    d_model = getattr(model.config, "hidden_size", None) or model_parts(model).unembed.weight.shape[-1]
    kept = int(select.sum()) if window is None else min(int(select.sum()), window)
    fix = "pass fewer layers or positions" + (", or a smaller window" if window else ", or read in windows (window=)")
    check_output_bytes("lens_pass's residual streams", (kept, len(layers), d_model), model.dtype.itemsize,
                       max_output_bytes, fix)  # fmt: skip
    if window is not None:
        assert attention_mask is None or not bool((select & ~attention_mask.bool()).any()), "select on padding"
        return WindowedLensPass(model, input_ids, select, attention_mask, layers, window, stride)
    position_ids = position_ids_from_mask(attention_mask) if attention_mask is not None else None
    with _mapped_big_blocks():  # the block activations too: a pass per window of the harness grew the heap
        out = run_layers(model, input_ids, layers, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False, keep=None, select=select)  # fmt: skip
    return LensPass(hidden=out.hidden[0], layers=layers)
