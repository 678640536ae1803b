"""Perplexity of any strategy on a corpus: rolling windows with a stride, every token predicted exactly once.

Windows follow lm-evaluation-harness's ``loglikelihood_rolling`` (``get_rolling_token_windows`` with
``context_len = window - stride + 1``, then ``make_disjoint_window``): each document is tokenised on its own; a
prefix token (BOS/EOS) is put in front so the first token is predicted too; each window feeds at most ``window``
tokens and scores only the ``stride`` tokens it is the first to predict, with as much preceding context as fits.
``stride == window`` is exactly lm-eval's default (disjoint windows; the last one is shifted back to keep full
context). Worked example, tokens ``t0..t9``, prefix ``P``, ``window=4``, ``stride=2``::

    window  model input        targets            scored (last n targets)
    1       P  t0 t1 t2        t0 t1 t2 t3        t0 t1 t2 t3   (the first window scores all it sees)
    2       t1 t2 t3 t4        t2 t3 t4 t5        t4 t5
    3       t3 t4 t5 t6        t4 t5 t6 t7        t6 t7
    4       t5 t6 t7 t8        t6 t7 t8 t9        t8 t9

With ``stride=4`` (lm-eval's default): ``[P t0 t1 t2] -> t0..t3``, ``[t3 t4 t5 t6] -> t4..t7``,
``[t5 t6 t7 t8] -> t8 t9`` (the last window is shifted back so ``t8, t9`` keep three tokens of context).

Excluded tokens: a strategy with a plausibility cut-off (DoLa's relative top, say) can put ``-inf`` on the observed
token, which would make the perplexity infinite. We never report a silent ``inf`` or NaN: each excluded token is
counted (``excluded_fraction``) and charged ``floor_log_prob`` (default ``-20`` nats, probability ~2e-9) in
``perplexity``; ``perplexity_kept`` is computed over the tokens that were not excluded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from lenssample.lens.base import Lens
from lenssample.lens.passes import DEFAULT_CHUNK_BYTES, window_spans
from lenssample.scoring import right_padded, targets_by_strategy
from lenssample.strategies.base import Strategy
from lenssample.validation import check_int, check_number, check_tokenizer

DEFAULT_FLOOR_LOG_PROB = -20.0


@dataclass(frozen=True)
class Window:
    """One model input of a rolling evaluation.

    Attributes:
        input_ids: the tokens fed to the model (at most ``window``).
        target_ids: the token expected after each input token (same length).
        num_scored: the last ``num_scored`` targets are scored (predicted here for the first time).
        first_scored: index, in the document's token list, of the first scored target.
        document: index of the document in the corpus (:func:`corpus_windows`).
    """

    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    num_scored: int
    first_scored: int
    document: int = 0


def rolling_windows(
    tokens: Sequence[int],
    *,
    window: int,
    stride: int | None = None,
    prefix_token_id: int | None = None,
    leading_token_id: int | None = None,
) -> list[Window]:
    """Split one document's tokens into windows; every token is scored once (see the module's worked example).
    ``window``: the most tokens fed to the model at once; ``stride``: how many new tokens each window scores
    (default ``window``); ``prefix_token_id``: prepended so the first token is scored (``None``: it is not).
    ``leading_token_id``: a token the model must see first (the BOS of models such as Gemma, whose predictions
    collapse without it: Gemma-3-270M's perplexity on a Wikipedia paragraph is 13 with it, 288 without), put as
    context in front of every window that does not start with it; it is never scored."""
    window = check_int(window, field="window", low=1)
    stride = check_int(window if stride is None else stride, field="stride", low=1)
    if stride > window:
        raise ValueError(
            f"stride={stride} is larger than window={window}: tokens between windows would never be scored; "
            f"use stride <= window"
        )
    seq = ([prefix_token_id] if prefix_token_id is not None else []) + list(tokens)
    offset = 1 if prefix_token_id is not None else 0  # seq[i] is tokens[i - offset]
    windows = []
    # the positions predicting seq[1:], split as every lens pass splits them: seq[start:end] feeds the model and
    # predicts seq[owned + 1 : end + 1] for the first time
    for start, owned, end in window_spans(len(seq) - 1, window, stride):
        chunk = seq[start : end + 1]
        if leading_token_id is not None and chunk[0] != leading_token_id:
            chunk = [leading_token_id, *chunk]
        windows.append(Window(tuple(chunk[:-1]), tuple(chunk[1:]), end - owned, owned + 1 - offset))
    return windows


@dataclass(frozen=True)
class PerplexityResult:
    """Aggregated perplexity figures (natural logs; ``bits_per_byte`` in bits).

    ``perplexity`` and ``nll_per_token`` charge excluded tokens ``floor_log_prob``; ``perplexity_kept`` is over
    the tokens the strategy keeps. When nothing is excluded the two agree.
    """

    tokens: int
    bytes: int
    nll_per_token: float
    perplexity: float
    bits_per_byte: float
    excluded_tokens: int
    excluded_fraction: float
    perplexity_kept: float
    floor_log_prob: float


def window_records(
    model: nn.Module,
    windows: Sequence[Window],
    strategy: Strategy,
    *,
    lens: Lens | None = None,
    tokenizer: Any = None,
    batch_size: int = 4,
    floor_log_prob: float = DEFAULT_FLOOR_LOG_PROB,
    progress: bool = False,
) -> list[dict[str, float]]:
    """Score windows; one record per window: ``nll`` (floored), ``nll_finite``, ``tokens``, ``excluded``, ``bytes``.

    Windows of equal length are batched together (right padding for the rest).
    """
    (records,) = records_by_strategy(model, windows, [strategy], lens=lens, tokenizer=tokenizer,
                                     batch_size=batch_size, floor_log_prob=floor_log_prob, progress=progress)  # fmt: skip
    return records


def records_by_strategy(
    model: nn.Module,
    windows: Sequence[Window],
    strategies: Sequence[Strategy],
    *,
    lens: Lens | None = None,
    tokenizer: Any = None,
    batch_size: int = 4,
    floor_log_prob: float = DEFAULT_FLOOR_LOG_PROB,
    progress: bool = False,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[list[dict[str, float]]]:
    """:func:`window_records` for several strategies, sharing each batch's forward pass and projection
    (:func:`~lenssample.scoring.targets_by_strategy`): one list of window records per strategy, in order.
    ``max_chunk_bytes``: the budget of one chunk of lens logits (all the strategies' layers)."""
    check_int(batch_size, field="batch_size", low=1)
    check_tokenizer(model, tokenizer)
    records: list[list[dict[str, float]]] = [[{} for _ in windows] for _ in strategies]
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    bar = tqdm(total=len(windows), desc="perplexity windows", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        batch = [windows[i] for i in order[start : start + batch_size]]
        inputs, targets, mask, select = right_padded(
            [(w.input_ids, w.target_ids, w.num_scored) for w in batch]
        )
        by_strategy = targets_by_strategy(model, inputs, targets, select, strategies, lens=lens, attention_mask=mask,
                                          max_chunk_bytes=max_chunk_bytes)  # fmt: skip
        for row, w in enumerate(batch):
            # bytes: UTF-8 bytes of the scored tokens' text; 0 without a tokenizer (no bits per byte then)
            text = tokenizer.decode(list(w.target_ids[-w.num_scored :])) if tokenizer is not None else ""
            for scores, out in zip(by_strategy, records):
                lp = scores.values[row][select[row]].double()
                excluded = scores.excluded[row][select[row]]
                finite = lp[~excluded]
                out[order[start + row]] = {
                    "nll": float(-(finite.sum() + excluded.sum() * floor_log_prob)),
                    "nll_finite": float(-finite.sum()),
                    "tokens": w.num_scored,
                    "excluded": int(excluded.sum()),
                    "bytes": len(text.encode("utf-8")),
                }
        bar.update(len(batch))
    bar.close()
    return records


def aggregate(
    records: Iterable[dict[str, float]], floor_log_prob: float = DEFAULT_FLOOR_LOG_PROB
) -> PerplexityResult:
    """Corpus-level figures from per-window records: token-weighted, so the split into windows does not matter."""
    records = list(records)
    tokens = sum(int(r["tokens"]) for r in records)
    if tokens == 0:
        raise ValueError("no token was scored: the corpus is empty or every document is a single token")
    nll, nll_finite = sum(r["nll"] for r in records), sum(r["nll_finite"] for r in records)
    excluded, n_bytes = sum(int(r["excluded"]) for r in records), sum(int(r["bytes"]) for r in records)
    finite_tokens = tokens - excluded
    return PerplexityResult(
        tokens=tokens, bytes=n_bytes, nll_per_token=nll / tokens, perplexity=math.exp(nll / tokens),
        bits_per_byte=nll / (math.log(2) * n_bytes) if n_bytes else float("nan"), excluded_tokens=excluded,
        excluded_fraction=excluded / tokens, floor_log_prob=floor_log_prob,
        perplexity_kept=math.exp(nll_finite / finite_tokens) if finite_tokens else float("nan"),
    )  # fmt: skip


def corpus_windows(
    documents: Sequence[Sequence[int]],
    *,
    window: int,
    stride: int | None = None,
    prefix_token_id: int | None = None,
    leading_token_id: int | None = None,
    max_tokens: int | None = None,
) -> list[Window]:
    """Windows of several documents (never crossing a document), stopping after ``max_tokens`` scored tokens."""
    windows: list[Window] = []
    budget = math.inf if max_tokens is None else max_tokens
    for number, tokens in enumerate(documents):
        if budget <= 0:
            break
        if isinstance(tokens, str):
            raise TypeError("documents must be lists of token ids; tokenize each text (tokenizer.encode)")
        tokens = list(tokens)[: int(min(len(tokens), budget))]
        doc_windows = rolling_windows(tokens, window=window, stride=stride, prefix_token_id=prefix_token_id,
                                      leading_token_id=leading_token_id)  # fmt: skip
        windows.extend(replace(w, document=number) for w in doc_windows)
        budget -= sum(w.num_scored for w in doc_windows)
    if not windows:
        raise ValueError("the corpus has no token to score; give it some non-empty text")
    return windows


def perplexity(
    model: nn.Module,
    documents: Sequence[Sequence[int]],
    strategy: Strategy,
    *,
    window: int,
    stride: int | None = None,
    prefix_token_id: int | None = None,
    lens: Lens | None = None,
    tokenizer: Any = None,
    batch_size: int = 4,
    max_tokens: int | None = None,
    floor_log_prob: float = DEFAULT_FLOOR_LOG_PROB,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity of ``strategy`` on tokenised ``documents`` (lists of token ids).

    Example:
        >>> ids = [tokenizer.encode(d.text) for d in lenssample.data.wikipedia("heldout")]  # doctest: +SKIP
        >>> perplexity(model, ids, FinalLayer(), window=512, stride=256, tokenizer=tokenizer)  # doctest: +SKIP
    """
    check_number(floor_log_prob, field="floor_log_prob", high=0.0, high_open=True, fix="Use e.g. -20 (nats).")
    windows = corpus_windows(
        documents, window=window, stride=stride, prefix_token_id=prefix_token_id, max_tokens=max_tokens
    )
    records = window_records(model, windows, strategy, lens=lens, tokenizer=tokenizer, batch_size=batch_size,
                             floor_log_prob=floor_log_prob, progress=progress)  # fmt: skip
    return aggregate(records, floor_log_prob)
