"""Data for training a tuned lens: token windows, one pass of the frozen model, the closed-form translator.

The model's forward pass is the expensive part of training on a CPU, so it runs once per window: from each pass
we (1) accumulate the normal equations of a ridge regression per layer and (2) keep the residual streams of a random
subsample of positions for the KL fine-tuning that follows.

The closed form, translator after the final norm (``TunedLens(placement="after_norm")``): an ordinary ridge regression
of ``norm(h_L) - x`` on ``[x, 1]`` with ``x = norm(h_l)``, in the very space the unembedding reads.

The closed form, translator before the final norm (the paper's placement): the final norm sits *after* it and (for RMSNorm and LayerNorm) ignores the scale of its
input, so the translator only has to point in the right direction: we want ``T_l(h) = h + W h + b`` proportional to
the final layer's state ``h_L``. Dividing by ``r = rms(h)`` gives ``T_l(h) / r = x + W x + b / r`` with
``x = h / r``, which is linear in the features ``[x, 1 / r]``. So we regress the target ``y - x`` with
``y = h_L / rms(h_L)`` on ``[x, 1/r]``: a least-squares fit weighted per position by ``1 / r^2``, so that positions
with huge norms (the first token's attention sink) do not dominate, and whose solution is exactly a translator's
``(W, b)``. For models without a final norm the scale matters and we regress ``h_L - h`` on ``[h, 1]``. The ridge
strength is chosen per layer from a small grid by the squared error on held-out windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lenssample.model.adapters import model_parts
from lenssample.model.capture import run_layers

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class Collected:
    """What one pass of the model over the training windows leaves behind.

    Attributes:
        gram: ``[L, d+1, d+1]`` float64 normal matrices of the features ``[x, 1/r]`` (training windows).
        cross: ``[L, d+1, d]`` float64 ``features^T target``.
        heldout_gram, heldout_cross, heldout_target_sq: the same on held-out windows (``target_sq: [L]``).
        train_hidden: ``[P, L+1, d]`` residual streams of the sampled training positions (all layers).
        heldout_hidden: ``[Q, L+1, d]`` the same for held-out positions.
        tokens: number of positions seen.
    """

    gram: torch.Tensor
    cross: torch.Tensor
    heldout_gram: torch.Tensor
    heldout_cross: torch.Tensor
    heldout_target_sq: torch.Tensor
    train_hidden: torch.Tensor
    heldout_hidden: torch.Tensor
    tokens: int


def regression_pairs(
    hidden: torch.Tensor, final_norm: nn.Module | None, *, after_norm: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and targets of the closed-form fit (see the module docstring).

    Args:
        hidden: ``[n, L+1, d]`` residual streams of all layers.
        final_norm: the model's final norm (``None`` when it has none).
        after_norm: fit a translator of final-normed states (``TunedLens(placement="after_norm")``): features
            ``[norm(h_l), 1]``, target ``norm(h_L) - norm(h_l)``.

    Returns:
        ``features: [L, n, d+1]`` and ``targets: [L, n, d]`` float32.
    """
    hidden = hidden.float()
    if after_norm and final_norm is not None:
        normed = final_norm(hidden).float()
        x, y, extra = normed[:, :-1], normed[:, -1:], torch.ones_like(normed[:, :-1, :1])
    elif final_norm is not None:
        inner, final = hidden[:, :-1], hidden[:, -1:]
        rms = inner.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
        x = inner / rms
        y = final / final.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
        extra = 1.0 / rms
    else:
        x, y = hidden[:, :-1], hidden[:, -1:]
        extra = torch.ones_like(x[..., :1])
    features = torch.cat([x, extra], dim=-1).transpose(0, 1)
    targets = (y - x).transpose(0, 1)
    return features, targets


@torch.no_grad()
def collect(model: nn.Module, train_windows: Sequence[torch.Tensor], heldout_windows: Sequence[torch.Tensor],
            *, cache_positions: int, heldout_positions: int, batch_windows: int, generator: torch.Generator,
            cache_dtype: torch.dtype, after_norm: bool = False, progress: Any = None) -> Collected:  # fmt: skip
    """Run the frozen model once over every window; accumulate the fit and sample positions to keep.

    Position 0 of each window is skipped (an attention sink whose state is unlike any later position).
    ``after_norm`` fits translators of final-normed states (see :func:`regression_pairs`).
    """
    parts = model_parts(model)
    num_layers = parts.num_layers
    layers = list(range(num_layers + 1))
    device = parts.unembed.weight.device

    def _pass(windows: Sequence[torch.Tensor], keep_total: int, heldout: bool):
        total = sum(w.numel() - 1 for w in windows)
        chosen = torch.randperm(total, generator=generator)[: min(keep_total, total)]
        keep_mask = torch.zeros(total, dtype=torch.bool)
        keep_mask[chosen] = True
        kept, offset, tokens = [], 0, 0
        gram = cross = target_sq = 0  # sums of [L, ...] float64 tensors
        for item in _batches(windows, batch_windows):
            ids = torch.stack(item).to(device)
            out = run_layers(model, ids, layers, use_cache=False, keep=None)
            hidden = out.hidden[:, 1:].reshape(-1, num_layers + 1, out.hidden.shape[-1])
            n = hidden.shape[0]
            mask = keep_mask[offset : offset + n]
            offset += n
            tokens += n
            kept.append(hidden[mask.to(hidden.device)].to("cpu", cache_dtype))
            features, targets = regression_pairs(hidden, parts.final_norm, after_norm=after_norm)
            gram = gram + torch.bmm(features.transpose(1, 2), features).double()
            cross = cross + torch.bmm(features.transpose(1, 2), targets).double()
            if heldout:
                target_sq = target_sq + targets.double().pow(2).sum(dim=(1, 2))
            if progress is not None:
                progress.update(len(item))
        return gram, cross, target_sq, torch.cat(kept), tokens

    gram, cross, _, train_hidden, n_train = _pass(train_windows, cache_positions, False)
    h_gram, h_cross, h_sq, heldout_hidden, n_heldout = _pass(heldout_windows, heldout_positions, True)
    return Collected(gram=gram.cpu(), cross=cross.cpu(), heldout_gram=h_gram.cpu(), heldout_cross=h_cross.cpu(),
                     heldout_target_sq=h_sq.cpu(), train_hidden=train_hidden, heldout_hidden=heldout_hidden,
                     tokens=n_train + n_heldout)  # fmt: skip


def _batches(windows: Sequence[torch.Tensor], size: int) -> list[list[torch.Tensor]]:
    """Windows grouped by length (so a batch needs no padding), in chunks of ``size``."""
    groups: dict[int, list[torch.Tensor]] = {}
    for w in windows:
        groups.setdefault(w.numel(), []).append(w)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def ridge_solution(gram: torch.Tensor, cross: torch.Tensor, strength: float) -> torch.Tensor:
    """``[L, d+1, d]`` ridge solutions ``theta`` (``weight = theta[:, :d].T``, ``bias = theta[:, d]``) of the normal
    equations ``gram: [L, d+1, d+1]``, ``cross: [L, d+1, d]`` (float64) with the penalty
    ``strength * mean(diag(gram_x)) * ||W||^2``, which scales with the data; the bias is not penalised."""
    d = gram.shape[-1] - 1
    # a layer whose residual stream never varies (e.g. text that tokenizes to one id whose embedding is 0) has
    # scale 0: floored, so its system stays positive definite (the fit is then its bias alone)
    scale = torch.diagonal(gram[:, :d, :d], dim1=1, dim2=2).mean(-1).clamp_min(1e-12)  # [L]
    penalty = torch.ones(d + 1, dtype=gram.dtype)
    penalty[d] = 0.0
    system = gram + (strength * scale)[:, None, None] * torch.diag(penalty)  # symmetric positive definite
    # Cholesky, not LU: half the work, and MKL's threaded batched LU returned zero pivots on an AMD EPYC.
    factor, info = torch.linalg.cholesky_ex(system)
    theta = torch.cholesky_solve(cross, factor)
    if bool((info != 0).any()):  # not numerically positive definite: LU for those layers, one at a time
        for layer in torch.nonzero(info).flatten().tolist():
            theta[layer] = torch.linalg.solve(system[layer], cross[layer])
    return theta


def solve_ridge(
    collected: Collected, grid: Sequence[float] = RIDGE_GRID
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """The closed-form translators: per layer the ridge solution (:func:`ridge_solution`) with the best held-out
    squared error over the strengths of ``grid``.

    Returns:
        ``weight: [L, d, d]``, ``bias: [L, d]`` (float32) and the chosen relative ridge strength per layer.
    """
    gram, cross = collected.gram, collected.cross
    num_layers, d1, _ = gram.shape
    d = d1 - 1
    best_err = torch.full((num_layers,), float("inf"), dtype=gram.dtype)
    best = torch.zeros_like(cross)
    chosen = [None] * num_layers
    for lam in grid:
        theta = ridge_solution(gram, cross, lam)  # [L, d+1, d]
        # held-out squared error: ||F theta - T||^2 = tr(theta' G theta) - 2 tr(theta' C) + ||T||^2
        err = (
            (theta * torch.bmm(collected.heldout_gram, theta)).sum((1, 2))
            - 2 * (theta * collected.heldout_cross).sum((1, 2))
            + collected.heldout_target_sq
        )
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best[better] = theta[better]
        for layer in torch.nonzero(better).flatten().tolist():
            chosen[layer] = lam
    weight = best[:, :d, :].transpose(1, 2).float().contiguous()
    bias = best[:, d, :].float().contiguous()
    return weight, bias, chosen
