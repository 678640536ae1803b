"""Multiple-choice log-likelihood scoring under any strategy; accuracy and TruthfulQA's MC1/MC2/MC3.

Each choice is scored as a continuation of the context: the sum over its tokens of the strategy's score of the
observed token (lm-evaluation-harness's ``loglikelihood``). ``acc`` picks the highest sum; ``acc_norm`` divides the
sum by the continuation's length in UTF-8 bytes first (lm-eval's ``acc_norm``), which removes the bias toward
short answers.

For items with several true answers (and a best one), the metrics follow DoLa's ``tfqa_mc_eval.py`` ``MC_calcs``
(which renames TruthfulQA's original MC2/MC3):

- MC1: 1.0 if the *best* true answer scores above every false answer, else 0.0.
- MC2: the normalised probability mass of the true answers, ``sum exp(true) / (sum exp(true) + sum exp(false))``.
- MC3: the fraction of true answers that score above every false answer.

Departure: DoLa computes MC2 with ``exp`` and halves all scores until the sums are non-zero (underflow); we compute
the same ratio with ``logsumexp``, which never underflows. DoLa's scoring conventions are parameters of
:class:`ChoiceScoring`: ``excluded_value=-1000`` (its ``relative_top_value``, instead of ``-inf``) and
``post_softmax`` (``False`` sums raw strategy logits, as DoLa does by default). No repetition penalty is applied in
scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lenssample.data.sets import ChoiceItem
from lenssample.data.windows import leading_token_ids
from lenssample.lens.base import Lens
from lenssample.lens.passes import DEFAULT_CHUNK_BYTES
from lenssample.scoring import right_padded, targets_by_strategy
from lenssample.strategies.base import Strategy
from lenssample.validation import check_bool, check_number, check_tokenizer


@dataclass(frozen=True, kw_only=True)
class ChoiceScoring:
    """How continuations are scored: with log-probabilities (``post_softmax=True``) or the strategy's raw logits
    (DoLa's ``post_softmax=False``); ``excluded_value`` replaces ``-inf`` token scores (DoLa: ``-1000``), ``None``
    keeps ``-inf`` (a choice with an excluded token then never wins)."""

    post_softmax: bool = True
    excluded_value: float | None = -1000.0

    def __post_init__(self) -> None:
        check_bool(self.post_softmax, field="post_softmax")
        if self.excluded_value is not None:
            check_number(self.excluded_value, field="excluded_value",
                         fix="Use e.g. -1000, or None ('none' in a config) to keep -inf.")  # fmt: skip


def score_continuations(
    model: nn.Module,
    tokenizer: Any,
    context: str,
    continuations: Sequence[str],
    strategy: Strategy | Sequence[Strategy],
    *,
    lens: Lens | None = None,
    scoring: ChoiceScoring = ChoiceScoring(),
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[dict[str, float]]:
    """Score each continuation given the context, in one batched forward pass: one dict per continuation,
    ``sum`` (summed score), ``tokens``, ``bytes``, ``excluded`` (count of tokens at ``-inf`` before
    ``excluded_value``). With a list of strategies, one such list per strategy (the forward pass and the
    projection shared)."""

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    check_tokenizer(model, tokenizer)
    context_ids = encode(context)
    if context_ids:
        context_ids = leading_token_ids(tokenizer) + context_ids  # Gemma's BOS: context only, never scored
    if not context_ids:
        raise ValueError(f"context={context!r} has no tokens; give a non-empty context")
    rows = [encode(text) for text in continuations]
    for text, ids in zip(continuations, rows):
        if not ids:
            raise ValueError(f"continuation {text!r} has no tokens; give non-empty answers")
    inputs, targets, mask, select = right_padded(
        [((context_ids + r)[:-1], (context_ids + r)[1:], len(r)) for r in rows]
    )
    several = isinstance(strategy, (list, tuple))
    by_strategy = targets_by_strategy(model, inputs, targets, select, strategy if several else [strategy],
                                      lens=lens, attention_mask=mask, post_softmax=scoring.post_softmax,
                                      excluded_value=scoring.excluded_value,
                                      max_chunk_bytes=max_chunk_bytes)  # fmt: skip
    scored = [[
        {"sum": float(scores.values[i][select[i]].double().sum()), "tokens": len(rows[i]),
         "bytes": len(text.encode("utf-8")), "excluded": int(scores.excluded[i].sum())}
        for i, text in enumerate(continuations)
    ] for scores in by_strategy]  # fmt: skip
    return scored if several else scored[0]


def mc_metrics(
    sums: Sequence[float], lengths: Sequence[int], correct: Sequence[int], best: int | None
) -> dict:
    """Accuracy and MC1/MC2/MC3 of one item from its choices' summed scores ``sums`` and lengths in bytes
    (``acc_norm``), the indices of the ``correct`` choices and the ``best`` one (default ``correct[0]``); see the
    module docstring."""
    best = correct[0] if best is None else best
    true = [sums[i] for i in correct]
    false = [s for i, s in enumerate(sums) if i not in set(correct)]
    max_false = max(false)
    norm = [s / max(1, n) for s, n in zip(sums, lengths)]
    all_true = torch.tensor(true, dtype=torch.float64)
    everything = torch.tensor(list(true) + list(false), dtype=torch.float64)
    return {
        "acc": float(max(range(len(sums)), key=lambda i: sums[i]) in correct),
        "acc_norm": float(max(range(len(norm)), key=lambda i: norm[i]) in correct),
        "mc1": float(sums[best] > max_false),
        "mc2": float(torch.exp(torch.logsumexp(all_true, 0) - torch.logsumexp(everything, 0))),
        "mc3": sum(t > max_false for t in true) / len(true),
    }


def evaluate_item(
    model: nn.Module,
    tokenizer: Any,
    item: ChoiceItem,
    strategy: Strategy | Sequence[Strategy],
    *,
    lens: Lens | None = None,
    scoring: ChoiceScoring = ChoiceScoring(),
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Score one item: its metrics plus the per-choice sums (a JSON-ready record); with a list of strategies, one
    record per strategy (scored together, see :func:`score_continuations`)."""
    several = isinstance(strategy, (list, tuple))
    by_strategy = score_continuations(model, tokenizer, item.context, item.choices,
                                      strategy if several else [strategy], lens=lens, scoring=scoring,
                                      max_chunk_bytes=max_chunk_bytes)  # fmt: skip
    records = []
    for scored in by_strategy:
        sums = [s["sum"] for s in scored]
        metrics = mc_metrics(sums, [s["bytes"] for s in scored], item.correct, item.best)
        records.append({**metrics, "sums": sums, "excluded": sum(s["excluded"] for s in scored)})
    return records if several else records[0]
