"""Teacher-forced scoring: a strategy's log-probability of every token of a text.

The same strategy object that picks tokens in generation scores a given text here: position ``t``'s lens outputs
(of the strategy's layers) are combined into a distribution over token ``t + 1``. One forward pass reads the
residual stream of the strategy's layers at every position; the vocabulary projection and the strategy then run
over chunks of positions, so memory stays bounded by ``max_chunk_bytes`` whatever the text length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from lenssample.adapters import model_parts
from lenssample.decoding.loop import position_ids_from_mask
from lenssample.lens.base import Lens, as_lens
from lenssample.lens.capture import run_layers
from lenssample.strategies.base import FinalLayer, Strategy, StrategyOutput


def selected_decisions(
    model: nn.Module,
    input_ids: torch.Tensor,
    select: torch.Tensor,
    strategy: Strategy,
    *,
    lens: Lens | None,
    attention_mask: torch.Tensor | None,
    max_chunk_bytes: int,
) -> Iterator[tuple[int, int, StrategyOutput]]:
    """The strategy's output at the selected positions: one model pass, then lens and strategy over chunks.

    Args:
        input_ids: ``[batch, seq]`` on the model's device; ``attention_mask`` the same shape (or ``None``).
        select: ``[batch, seq]`` bool on the model's device, the positions to decide at.
        max_chunk_bytes: memory budget of one chunk (positions x layers x vocab x 4 bytes x 3).

    Yields:
        ``(start, stop, output)``: rows ``start:stop`` of the selected positions in row-major order, and the
        strategy's :class:`~lenssample.strategies.base.StrategyOutput` for them (``logits [stop - start, vocab]``).
    """
    parts = model_parts(model)
    lens = as_lens(model, lens).with_final_norm(strategy.apply_final_norm)
    layers = strategy.check_model(parts.num_layers)
    position_ids = position_ids_from_mask(attention_mask) if attention_mask is not None else None
    out = run_layers(
        model,
        input_ids,
        layers,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        keep=None,
    )
    hidden = out.hidden[select]  # [rows, n_layers, d_model]: only the positions asked for
    chunk = max(1, int(max_chunk_bytes // (len(layers) * parts.vocab_size * 4 * 3)))
    for start in range(0, hidden.shape[0], chunk):
        stop = min(hidden.shape[0], start + chunk)
        yield start, stop, strategy(lens(hidden[start:stop], layers), layers)


@dataclass
class ScoreOutput:
    """Per-position scores of a text under a strategy.

    Attributes:
        token_log_probs: ``[batch, seq - 1]`` log-probability of ``input_ids[:, t + 1]`` given ``input_ids[:, :t+1]``
            (``-inf`` where the strategy excludes the observed token; 0 at padded targets).
        log_probs: ``[batch, seq - 1, vocab]`` full distributions, only when asked for.
        info: the strategy's per-position decisions, each ``[batch, seq - 1]``.
        target_mask: ``[batch, seq - 1]`` True where the target is a real (non-padding) token.
    """

    token_log_probs: torch.Tensor
    target_mask: torch.Tensor
    log_probs: torch.Tensor | None = None
    info: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.inference_mode()
def score(
    model: nn.Module,
    input_ids: torch.Tensor,
    strategy: Strategy | None = None,
    *,
    lens: Lens | None = None,
    attention_mask: torch.Tensor | None = None,
    return_log_probs: bool = False,
    max_chunk_bytes: int = 256 * 2**20,
) -> ScoreOutput:
    """Score every next token of ``input_ids`` under ``strategy``.

    Args:
        model: a supported causal LM.
        input_ids: ``[batch, seq]`` (or ``[seq]``), seq >= 2; right or left padding allowed with ``attention_mask``.
        strategy: default :class:`~lenssample.FinalLayer` (the model's own log-probs).
        lens: default the logit lens.
        attention_mask: ``[batch, seq]``.
        return_log_probs: also return the full ``[batch, seq - 1, vocab]`` log-probs.
        max_chunk_bytes: memory budget for one chunk of lens logits (positions x layers x vocab x 4 bytes x 3).

    Returns:
        :class:`ScoreOutput`.
    """
    parts = model_parts(model)
    strategy = FinalLayer() if strategy is None else strategy
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a lenssample Strategy, got {type(strategy).__name__}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise ValueError(
            f"input_ids has shape {tuple(input_ids.shape)}; scoring needs [batch, seq] with seq >= 2 tokens"
        )
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}"
            )
    batch, seq = input_ids.shape
    select = torch.ones_like(input_ids, dtype=torch.bool)
    select[:, -1] = False  # the last position has no target
    targets = input_ids[:, 1:].reshape(-1)
    rows = targets.numel()
    token_lp = torch.empty(rows, dtype=torch.float32, device=device)
    full = (
        torch.empty(rows, parts.vocab_size, dtype=torch.float32, device=device) if return_log_probs else None
    )
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
        log_probs = torch.log_softmax(decision.logits.float(), dim=-1)
        token_lp[start:stop] = log_probs.gather(-1, targets[start:stop, None]).squeeze(-1)
        if full is not None:
            full[start:stop] = log_probs
        for key, value in decision.info.items():
            info.setdefault(key, []).append(value.reshape(-1))
    target_mask = (
        attention_mask[:, 1:].bool()
        if attention_mask is not None
        else torch.ones_like(input_ids[:, 1:], dtype=torch.bool)
    )
    token_lp = token_lp.reshape(batch, seq - 1).masked_fill(~target_mask, 0.0)
    return ScoreOutput(
        token_log_probs=token_lp,
        target_mask=target_mask,
        log_probs=full.reshape(batch, seq - 1, -1) if full is not None else None,
        info={key: torch.cat(values).reshape(batch, seq - 1) for key, values in info.items()},
    )
