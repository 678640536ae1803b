"""Teacher-forced scoring: a strategy's score of every next token of a text (:func:`score`), or of chosen targets
at chosen positions (:func:`target_scores`, what the evaluation harness and lm-eval need).

The same strategy object that picks tokens in generation scores a given text here: position ``t``'s lens outputs
(of the strategy's layers) are combined into a distribution over token ``t + 1``. One :func:`~lenssample.lens.passes
.lens_pass` reads the residual stream of the strategy's layers at the positions asked for; the vocabulary projection
runs over chunks of positions, so memory stays bounded by ``max_chunk_bytes`` whatever the length, and each strategy
combines a chunk a few rows at a time (:func:`~lenssample.lens.passes.row_parts`, on a reused heap).
The residual streams of the whole text stay until the end (``8192 positions x 31 layers x 576 floats`` = 585 MB
for the all-layer ensemble on the default model); ``score(..., window=1024)`` reads the text in windows instead
(:mod:`lenssample.lens.passes`), flat in memory and not limited by the model's maximum positions, each position
then seeing at least ``window - stride`` tokens of context.

Excluded tokens: a strategy with a plausibility cut-off (DoLa, layer contrast) gives ``-inf`` to every token outside
its plausible set, so the observed token can have log-probability ``-inf``. Both functions report where that
happened (``excluded``); set the strategy's ``excluded_logit`` (e.g. ``-1000``, as the DoLa paper does for
likelihoods) for finite scores, or use :mod:`lenssample.eval.perplexity`, which reports the perplexity over the
kept tokens and the excluded fraction.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lenssample.lens.base import Lens, as_lens
from lenssample.lens.passes import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_OUTPUT_BYTES,
    check_chunk_bytes,
    check_output_bytes,
    check_window,
    lens_pass,
    reused_heap,
    row_parts,
)
from lenssample.lens.tuned import load_lens
from lenssample.strategies.base import Strategy, as_strategy
from lenssample.validation import (
    check_attention_mask,
    check_bool,
    check_length,
    check_next_token_logits,
    check_token_ids,
)


def _prepare(model: nn.Module, input_ids: Any, attention_mask: Any, min_length: int, window: int | None = None) -> tuple:  # fmt: skip
    vocab = as_lens(model, None).vocab_size
    ids = check_token_ids(input_ids, vocab, min_length=min_length).to(next(model.parameters()).device)
    check_length(model, ids.shape[1], window=window)
    return ids, check_attention_mask(attention_mask, ids)


def _target_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_ids: torch.Tensor,
    select: torch.Tensor,
    strategies: Sequence[Strategy],
    *,
    lens: Lens | None,
    attention_mask: torch.Tensor | None,
    post_softmax: bool,
    max_chunk_bytes: int,
    max_output_bytes: int,
    full: torch.Tensor | None = None,
    window: int | None = None,
    stride: int | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """``(scores, greedy, info)`` of the targets at the selected positions under each strategy, in their row-major
    order. ``scores [n_selected]`` float32, ``greedy [n_selected]`` whether the target is the strategy's top token,
    ``info`` the strategy's decisions (``[n_selected]`` each); ``full``, when given (one strategy), receives the scored
    distributions ``[n_selected, vocab]``. Tensors ``[batch, seq]`` on the model's device.

    Several strategies share the work: one lens pass reads the union of their layers (per final-norm setting) and
    each chunk is projected once; every strategy then combines its own layers of that chunk. ``window``,
    ``stride``: read in windows (:func:`~lenssample.lens.passes.lens_pass`)."""
    targets = target_ids[select]
    results = [(torch.empty(targets.numel(), dtype=torch.float32, device=input_ids.device),
                torch.empty(targets.numel(), dtype=torch.bool, device=input_ids.device), {})
               for _ in strategies]  # fmt: skip
    for final_norm in dict.fromkeys(s.apply_final_norm for s in strategies):
        group = [i for i, s in enumerate(strategies) if s.apply_final_norm == final_norm]
        group_lens = as_lens(model, lens).with_final_norm(final_norm)
        vocab = group_lens.vocab_size
        own_layers = {i: strategies[i].check_model(group_lens.num_layers) for i in group}
        layers = tuple(sorted(set().union(*own_layers.values())))
        where = {i: torch.tensor([layers.index(layer) for layer in own_layers[i]]) for i in group}
        passed = lens_pass(model, input_ids, layers, attention_mask=attention_mask, select=select,
                           max_output_bytes=max_output_bytes, window=window, stride=stride)  # fmt: skip
        for chunk in passed.chunks(group_lens, max_chunk_bytes=max_chunk_bytes, copies=3 + (len(group) > 1)):
            with reused_heap():  # each strategy a few rows at a time, its temporaries reused (see there)
                for i in group:
                    strategy, (picked, top, info) = strategies[i], results[i]
                    for part in row_parts(chunk.stop - chunk.start, len(where[i]) * vocab * 4):
                        rows = slice(chunk.start + part.start, chunk.start + part.stop)
                        mine = chunk.logits[part]
                        mine = mine if len(where[i]) == len(layers) else mine.index_select(1, where[i])
                        decision = strategy(mine, own_layers[i])
                        check_next_token_logits(decision.logits, source=f"strategy {strategy.to_spec()!r}")
                        for key, value in decision.info.items():  # into one tensor per key, allocated once: many
                            if key not in info:  # small kept tensors would fragment the heap (see reused_heap)
                                info[key] = value.new_zeros(targets.numel())
                            info[key][rows] = value.reshape(-1)
                        logits = decision.logits.float()
                        logits = torch.log_softmax(logits, dim=-1) if post_softmax else logits
                        picked[rows] = logits.gather(-1, targets[rows, None]).squeeze(-1)
                        top[rows] = picked[rows] >= logits.max(dim=-1).values
                        if full is not None:
                            full[rows] = logits.to(full.device)
    return results


@dataclass
class ScoreOutput:
    """Per-position scores of a text under a strategy.

    Attributes:
        token_log_probs: ``[batch, seq - 1]`` log-probability of ``input_ids[:, t + 1]`` given ``input_ids[:, :t+1]``
            (``-inf`` where the strategy excludes the observed token, see ``excluded``; 0 at padded targets).
        target_mask: ``[batch, seq - 1]`` True where the target and the position predicting it are real
            (non-padding) tokens (a left-padded row's first token has no context and is not scored).
        excluded: ``[batch, seq - 1]`` True where the strategy excluded the observed token (``-inf``).
        log_probs: ``[batch, seq - 1, vocab]`` full distributions, only when asked for (zeros where
            ``target_mask`` is False).
        info: the strategy's per-position decisions, each ``[batch, seq - 1]`` (0 where ``target_mask`` is False).
    """

    token_log_probs: torch.Tensor
    target_mask: torch.Tensor
    excluded: torch.Tensor
    log_probs: torch.Tensor | None = None
    info: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def score(
    model: nn.Module,
    input_ids: torch.Tensor,
    strategy: Strategy | str | None = None,
    *,
    lens: Lens | None = None,
    attention_mask: torch.Tensor | None = None,
    return_log_probs: bool = False,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_output_bytes: int = DEFAULT_OUTPUT_BYTES,
    window: int | None = None,
    stride: int | None = None,
) -> ScoreOutput:
    """Score every next token of ``input_ids`` under ``strategy``; a warning says how many targets it excluded.

    ``input_ids``: ``[batch, seq]`` (or ``[seq]``), seq >= 2; right or left padding allowed with ``attention_mask``
    (``[batch, seq]`` of 0/1). ``strategy``: a strategy or a spec (``"dola:layers=high"``); default ``FinalLayer``
    (the model's own log-probs). ``return_log_probs``: also return the full ``[batch, seq - 1, vocab]`` log-probs.
    ``max_chunk_bytes``: memory budget for one chunk of lens logits (positions x layers x vocab x 4 bytes x 3).
    ``max_output_bytes``: refuse, before any work, when the full log-probs (or the residual streams the strategy
    reads) would be larger. ``window``: read the text in windows of at most this many tokens, each adding ``stride``
    new positions (default ``window // 2``), so that memory stays flat in text length and texts longer than the
    model's maximum positions can be scored; a position then sees at least ``window - stride`` tokens of context
    (exact where its whole past fits in its window). ``None`` (default): one pass, exact.
    """
    check_chunk_bytes(max_chunk_bytes)
    check_bool(return_log_probs, field="return_log_probs")
    window, stride = check_window(window, stride)
    strategy, lens = as_strategy(strategy), None if lens is None else load_lens(lens, model)
    input_ids, attention_mask = _prepare(model, input_ids, attention_mask, min_length=2, window=window)
    batch, seq = input_ids.shape
    # a target counts when it and the position predicting it are tokens: with left padding, a row's first token is
    # predicted from padding (no context) and is not scored, as when the row is scored alone
    target_mask = (
        torch.ones(batch, seq - 1, dtype=torch.bool, device=input_ids.device) if attention_mask is None
        else attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    )  # fmt: skip
    select = torch.cat([target_mask, target_mask.new_zeros(batch, 1)], dim=1)  # the last position has no target
    full = None
    if return_log_probs:
        fix = "drop return_log_probs (token_log_probs alone is [batch, seq - 1]) or score shorter texts"
        vocab = as_lens(model, lens).vocab_size
        check_output_bytes("score's log_probs", (batch, seq - 1, vocab), 4, max_output_bytes, fix)
        full = torch.empty(int(select.sum()), vocab)
    ((picked, _, info),) = _target_scores(
        model, input_ids, input_ids.roll(-1, dims=1), select, [strategy], lens=lens, attention_mask=attention_mask,
        post_softmax=True, max_chunk_bytes=max_chunk_bytes, max_output_bytes=max_output_bytes, full=full,
        window=window, stride=stride,
    )  # fmt: skip

    def spread(values: torch.Tensor) -> torch.Tensor:  # [n_selected, ...] -> [batch, seq - 1, ...], 0 elsewhere
        if attention_mask is None:
            return values.reshape(batch, seq - 1, *values.shape[1:])
        out = values.new_zeros(batch, seq - 1, *values.shape[1:])
        out[target_mask] = values.to(out.device)
        return out

    token_lp = spread(picked)
    excluded = torch.isneginf(token_lp)
    if bool(excluded.any()):
        warnings.warn(
            f"strategy {strategy.to_spec()!r} excluded {int(excluded.sum())} of {int(target_mask.sum())} observed "
            "tokens (log-probability -inf: outside its plausible set); ScoreOutput.excluded marks them. Set its "
            "excluded_logit (e.g. -1000) for finite scores",
            stacklevel=2,
        )
    full = spread(full) if full is not None else None
    decisions = {key: spread(values) for key, values in info.items()}
    return ScoreOutput(token_lp, target_mask, excluded, full, decisions)


@dataclass
class TargetScores:
    """Scores of the selected targets.

    Attributes:
        values: ``[batch, seq]`` score of ``target_ids`` at selected positions (log-probability, or the strategy's
            raw logit when ``post_softmax=False``); 0 elsewhere. ``-inf`` where the strategy excludes the token,
            unless ``excluded_value`` replaced it.
        excluded: ``[batch, seq]`` True where the strategy put ``-inf`` on the observed target.
        greedy: ``[batch, seq]`` True where the target is the strategy's top token (lm-eval's ``is_greedy``).
        info: the strategy's per-position decisions (e.g. ``premature_layer``), each ``[n_selected]`` float, in
            row-major order of the selected positions.
    """

    values: torch.Tensor
    excluded: torch.Tensor
    greedy: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)


def right_padded(rows: Sequence[tuple[Sequence[int], Sequence[int], int]]) -> tuple[torch.Tensor, ...]:
    """``(input_ids, target_ids, attention_mask, select)`` for :func:`target_scores`, each ``[len(rows), longest]``,
    from ``(inputs, targets, n_scored)`` rows: right-padded, the last ``n_scored`` targets of each row selected."""
    inputs = torch.zeros(len(rows), max(len(row[0]) for row in rows), dtype=torch.long)
    targets, mask, select = (
        torch.zeros_like(inputs),
        torch.zeros_like(inputs),
        torch.zeros_like(inputs, dtype=torch.bool),
    )
    for row, (ids, target, scored) in enumerate(rows):
        n = len(ids)
        inputs[row, :n], targets[row, :n], mask[row, :n] = torch.tensor(ids), torch.tensor(target), 1
        select[row, n - scored : n] = True
    return inputs, targets, mask, select


def target_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_ids: torch.Tensor,
    select: torch.Tensor,
    strategy: Strategy,
    **options: Any,
) -> TargetScores:
    """Score ``target_ids[b, t]`` given ``input_ids[b, : t + 1]`` at the positions where ``select`` is True, under
    ``strategy``; ``options`` and the arguments are :func:`targets_by_strategy`'s."""
    (scores,) = targets_by_strategy(model, input_ids, target_ids, select, [strategy], **options)
    return scores


@torch.inference_mode()
def targets_by_strategy(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_ids: torch.Tensor,
    select: torch.Tensor,
    strategies: Sequence[Strategy],
    *,
    lens: Lens | None = None,
    attention_mask: torch.Tensor | None = None,
    post_softmax: bool = True,
    excluded_value: float | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_output_bytes: int = DEFAULT_OUTPUT_BYTES,
) -> list[TargetScores]:
    """Score ``target_ids[b, t]`` given ``input_ids[b, : t + 1]`` at the positions where ``select`` is True, under
    each of ``strategies``: one :class:`TargetScores` per strategy, in order. The forward pass and the projection of
    each chunk are shared (what the evaluation harness does per item); each strategy's scores equal its own
    :func:`target_scores` call's.

    ``input_ids``, ``target_ids`` (the token expected after each input position) and ``select`` (bool, never on
    padding) are ``[batch, seq]``, right-padded (``attention_mask`` 0 on the padding). ``post_softmax``: score with
    ``log_softmax`` of the strategy's logits (a log-probability); ``False`` scores with the raw logits, as DoLa's
    ``lm_score(post_softmax=False)`` does for its contrast scores. ``excluded_value``: replaces ``-inf`` scores
    (DoLa's convention is ``-1000``); ``None`` keeps ``-inf`` and the caller must handle it (see ``excluded``).
    ``max_chunk_bytes``: the budget of one chunk of lens logits (the union of the strategies' layers).
    ``max_output_bytes``: refuse, before any work, when the residual streams the strategies read would be larger.
    """
    check_chunk_bytes(max_chunk_bytes)
    strategies = [as_strategy(strategy) for strategy in strategies]
    input_ids, attention_mask = _prepare(model, input_ids, attention_mask, min_length=1)
    target_ids, select = target_ids.to(input_ids.device), select.to(input_ids.device).bool()
    results = _target_scores(
        model, input_ids, target_ids, select, strategies, lens=lens, attention_mask=attention_mask,
        post_softmax=post_softmax, max_chunk_bytes=max_chunk_bytes, max_output_bytes=max_output_bytes,
    )  # fmt: skip

    def spread(values: torch.Tensor, fill: Any) -> torch.Tensor:
        out = torch.full(select.shape, fill, dtype=values.dtype, device=values.device)
        out[select] = values
        return out.cpu()

    scored = []
    for picked, top, info in results:
        excluded_rows = torch.isneginf(picked)
        if excluded_value is not None:
            picked = picked.masked_fill(excluded_rows, float(excluded_value))
        floats = {key: values.float().cpu() for key, values in info.items()}
        scored.append(TargetScores(spread(picked, 0.0), spread(excluded_rows, False), spread(top, False), floats))
    return scored
