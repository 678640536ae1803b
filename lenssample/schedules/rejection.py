"""Verification of drafted tokens: greedy prefix matching and speculative rejection sampling.

Terms (Leviathan et al. 2023, arXiv 2211.17192; Chen et al. 2023, arXiv 2302.01318):

- *draft* tokens ``d_1..d_k`` were proposed by a cheap model with (processed) distributions ``q_1..q_k``;
- the *target* (the full model) gives distributions ``p_1..p_k`` at the same positions, and possibly ``p_{k+1}``
  after the last draft token;
- a draft token is *accepted* with probability ``min(1, p_i(d_i) / q_i(d_i))``; at the first rejection a
  *recovered* token is drawn from the residual ``max(0, p_i - q_i)`` (normalised); when every draft token is
  accepted and ``p_{k+1}`` is known, a *bonus* token is drawn from it.

This keeps every emitted token distributed exactly as the target's ``p`` (the proof is in both papers). Greedy
decoding is the special case where ``p`` and ``q`` are one-hot at their argmax: accept while the draft equals the
target's argmax, then emit the target's argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lenssample.validation import check_next_token_logits


@dataclass(frozen=True)
class Verdict:
    """Result of verifying one draft: ``accepted`` leading draft tokens (``0..k``), then ``next_token``, the
    recovered token (after a rejection) or the bonus token (all accepted and the target's distribution after the
    last draft token was given); ``None`` when all were accepted without a bonus."""

    accepted: int
    next_token: int | None


def _check(draft_tokens: torch.Tensor, target: torch.Tensor) -> int:
    k = int(draft_tokens.shape[0])
    if draft_tokens.dim() != 1 or target.dim() != 2 or target.shape[0] not in (k, k + 1):
        raise ValueError(
            f"draft_tokens must be [k] and the target [k or k + 1, vocab]; got {tuple(draft_tokens.shape)} and "
            f"{tuple(target.shape)}"
        )
    return k


def verify_greedy(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> Verdict:
    """Greedy verification: the longest prefix of the draft ``draft_tokens: [k]`` equal to the target's argmax, plus
    one token. ``target_logits: [k or k + 1, vocab]`` processed; row ``i`` is the distribution of the token at draft
    position ``i`` (row ``k``, if given, comes after the last draft token)."""
    k = _check(draft_tokens, target_logits)
    check_next_token_logits(target_logits, source="verify_greedy's target_logits")
    target_tokens = target_logits.argmax(dim=-1)
    agree = (target_tokens[:k] == draft_tokens).long()
    accepted = int(agree.cumprod(0).sum())
    next_token = int(target_tokens[accepted]) if accepted < target_tokens.shape[0] else None
    return Verdict(accepted=accepted, next_token=next_token)


def rejection_sample(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Verdict:
    """Speculative rejection sampling (lossless: each emitted token follows the target distribution).

    ``draft_tokens: [k]`` were sampled from the draft's distributions ``draft_probs: [k, vocab]`` (``q``);
    ``target_probs: [k or k + 1, vocab]`` are the target's ``p`` at the same positions (plus the one after the last
    draft token, for the bonus). ``generator``: ``None`` uses torch's global one.
    """
    k = _check(draft_tokens, target_probs)
    if draft_probs.shape != (k, target_probs.shape[1]):
        raise ValueError(
            f"draft_probs must be [k, vocab] = {(k, target_probs.shape[1])}, got {tuple(draft_probs.shape)}"
        )
    for name, probs in (("target_probs", target_probs), ("draft_probs", draft_probs)):  # NaN, < 0, all 0
        check_next_token_logits(probs.log(), source=f"rejection_sample's {name} (as log-probabilities)")
    rows = torch.arange(k, device=draft_tokens.device)
    p = target_probs[:k][rows, draft_tokens].double()
    q = draft_probs[rows, draft_tokens].double()
    uniform = torch.rand(k, generator=generator, device=draft_tokens.device, dtype=torch.float64)
    # Accept d_i when u_i * q_i(d_i) <= p_i(d_i), i.e. with probability min(1, p/q) (q > 0: d_i was sampled).
    accept = (uniform * q <= p).long()
    accepted = int(accept.cumprod(0).sum())
    if accepted < k:
        residual = (target_probs[accepted].double() - draft_probs[accepted].double()).clamp_min(0)
        total = residual.sum()
        # p == q gives a zero residual but then the token is never rejected; guard against round-off anyway.
        next_probs = residual / total if total > 0 else target_probs[accepted].double()
    elif target_probs.shape[0] == k + 1:
        next_probs = target_probs[k]
    else:
        return Verdict(accepted=accepted, next_token=None)
    return Verdict(accepted, int(torch.multinomial(next_probs.float(), 1, generator=generator)))
