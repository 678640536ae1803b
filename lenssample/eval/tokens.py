"""Per-token scores of given targets under any strategy, computed only where they are needed.

The evaluation tasks (perplexity windows, multiple-choice continuations) need the strategy's score of an observed
token at a *subset* of positions. This runs the model once over the inputs, keeps the residual stream of the
strategy's layers, and projects to the vocabulary only at the selected positions, in chunks whose memory is bounded
by ``max_chunk_bytes`` (positions x layers x vocabulary), whatever the text length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.scoring import selected_decisions
from lenssample.strategies.base import Strategy


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


@torch.inference_mode()
def target_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_ids: torch.Tensor,
    select: torch.Tensor,
    strategy: Strategy,
    *,
    lens: Lens | None = None,
    attention_mask: torch.Tensor | None = None,
    post_softmax: bool = True,
    excluded_value: float | None = None,
    max_chunk_bytes: int = 128 * 2**20,
) -> TargetScores:
    """Score ``target_ids[b, t]`` given ``input_ids[b, : t + 1]`` at the positions where ``select`` is True.

    Args:
        model: a supported causal LM.
        input_ids: ``[batch, seq]`` model inputs, right-padded (``attention_mask`` 0 on the padding).
        target_ids: ``[batch, seq]`` the token expected after each input position.
        select: ``[batch, seq]`` bool, positions to score (never on padding).
        strategy: any registered :class:`~lenssample.strategies.base.Strategy`.
        lens: the lens the strategy reads through (default the logit lens).
        attention_mask: ``[batch, seq]``.
        post_softmax: score with ``log_softmax`` of the strategy's logits (a log-probability). ``False`` scores
            with the raw logits, as DoLa's ``lm_score(post_softmax=False)`` does for its contrast scores.
        excluded_value: replace ``-inf`` scores by this value (DoLa's convention is ``-1000``); ``None`` keeps
            ``-inf`` and the caller must handle it (see ``excluded``).
        max_chunk_bytes: memory budget for one chunk of lens logits.

    Returns:
        :class:`TargetScores`.
    """
    device = next(model.parameters()).device
    input_ids, target_ids, select = input_ids.to(device), target_ids.to(device), select.to(device).bool()
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    targets = target_ids[select]
    rows = targets.numel()
    picked = torch.empty(rows, dtype=torch.float32, device=device)
    top = torch.empty(rows, dtype=torch.bool, device=device)
    info: dict[str, list[torch.Tensor]] = {}
    for start, stop, decision in selected_decisions(
        model,
        input_ids,
        select,
        strategy,
        lens=lens,
        attention_mask=attention_mask,
        max_chunk_bytes=max_chunk_bytes,
    ):
        logits = decision.logits.float()
        if post_softmax:
            logits = torch.log_softmax(logits, dim=-1)
        picked[start:stop] = logits.gather(-1, targets[start:stop, None]).squeeze(-1)
        top[start:stop] = picked[start:stop] >= logits.max(dim=-1).values
        for key, value in decision.info.items():
            info.setdefault(key, []).append(value.reshape(-1).float())
    excluded_rows = torch.isneginf(picked)
    if excluded_value is not None:
        picked = picked.masked_fill(excluded_rows, float(excluded_value))
    values = torch.zeros(select.shape, dtype=torch.float32, device=device)
    values[select] = picked
    excluded = torch.zeros_like(select)
    excluded[select] = excluded_rows
    greedy = torch.zeros_like(select)
    greedy[select] = top
    return TargetScores(
        values=values.cpu(),
        excluded=excluded.cpu(),
        greedy=greedy.cpu(),
        info={key: torch.cat(parts_).cpu() for key, parts_ in info.items()},
    )
