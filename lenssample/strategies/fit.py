"""Fitted ensemble weights: the mixture of layer distributions that minimises next-token NLL on given text.

For a mixture ``p(y) = sum_j w_j q_j(y)`` the training objective needs only each layer's probability of the
observed next token, an ``[positions, n_layers]`` matrix ``Q``: ``NLL(w) = -mean_i log (Q_i . w)``. It is convex in
``w``, so minimising it on the simplex (scipy's SLSQP, with the analytic gradient) finds the global optimum; the
final layer alone (a vertex of the simplex) is one of the candidates, so the fitted mixture is never worse than the
final layer *on the fitting text*. Whether it is better on held-out text is an empirical question
(``evals/configs/strategies.toml`` measures it).

Fit on ``lenssample.data.wikipedia("train")`` and evaluate on ``"heldout"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

from lenssample.data.windows import token_windows
from lenssample.lens.base import Lens, as_lens
from lenssample.lens.passes import DEFAULT_CHUNK_BYTES, check_chunk_bytes, lens_pass
from lenssample.model.adapters import model_parts
from lenssample.strategies.ensemble import LayerEnsemble
from lenssample.strategies.fields import LayerSpec
from lenssample.validation import check_tokenizer


@dataclass(frozen=True)
class FitResult:
    """Fitted layer weights; NLLs are means in nats/token over the fitting tokens."""

    strategy: LayerEnsemble  # ready to use (combine="mixture"), with the fitted weights
    layers: tuple[int, ...]  # in the order of `weights`
    weights: tuple[float, ...]  # non-negative, summing to 1
    nll: float  # of the fitted mixture
    final_nll: float  # of the final layer alone
    tokens: int  # how many next-token targets were fitted


@torch.inference_mode()
def layer_token_log_probs(
    model: nn.Module,
    input_ids: torch.Tensor,
    layers: Sequence[int],
    *,
    lens: Lens | None = None,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """Each layer's lens log-probability of every observed next token: ``[batch * (seq - 1), n_layers]``.

    One lens pass reads the residual streams of ``layers`` (sorted, distinct); the vocabulary projection runs over
    chunks of positions, all layers of a chunk in one matrix product.
    """
    check_chunk_bytes(max_chunk_bytes)
    lens = as_lens(model, lens)
    layers = lens.check_layers(layers)
    input_ids = input_ids.to(lens.parts.unembed.weight.device)
    select = torch.ones_like(input_ids, dtype=torch.bool)
    select[:, -1] = False
    targets = input_ids[:, 1:].reshape(-1)
    passed = lens_pass(model, input_ids, layers, select=select)
    result = torch.empty(targets.numel(), len(layers), dtype=torch.float32, device=input_ids.device)
    for chunk in passed.chunks(lens, max_chunk_bytes=max_chunk_bytes, copies=2):
        log_probs = torch.log_softmax(chunk.logits, dim=-1)  # [rows, n, vocab]
        index = targets[chunk.start : chunk.stop, None, None].expand(-1, len(layers), 1)
        result[chunk.start : chunk.stop] = log_probs.gather(-1, index)[..., 0]
    return result


def fit_mixture_weights(token_log_probs: np.ndarray) -> tuple[np.ndarray, float]:
    """``(weights [n_layers], nll)`` minimising ``-mean_i log(sum_j w_j exp(A_ij))`` over the simplex, ``A`` the
    ``[positions, n_layers]`` log-probabilities of the observed tokens."""
    a = np.maximum(np.asarray(token_log_probs, dtype=np.float64), -1.0e4)
    shift = a.max(axis=1, keepdims=True)
    b = np.exp(a - shift)  # [N, n], each row's largest entry is 1
    n = a.shape[1]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = np.maximum(b @ w, 1e-300)
        return float(-(np.log(s) + shift[:, 0]).mean()), -(b / s[:, None]).mean(axis=0)

    simplex = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    result = minimize(objective, np.full(n, 1.0 / n), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * n,
                      constraints=[simplex], options={"maxiter": 500, "ftol": 1e-10})  # fmt: skip
    weights = np.clip(result.x, 0.0, None)
    weights /= weights.sum()
    # The final layer alone is a feasible point; keep it if the optimiser stopped somewhere worse.
    vertex = np.eye(n)[-1]
    weights, nll = min((weights, objective(weights)[0]), (vertex, objective(vertex)[0]), key=lambda c: c[1])
    return weights, nll


def fit_layer_weights(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    layers: LayerSpec = "all",
    lens: Lens | None = None,
    max_tokens: int = 4096,
    window: int = 512,
) -> FitResult:
    """Fit mixture weights over ``layers`` on ``texts`` and return a ready strategy.

    Args:
        texts: fitting text, e.g. ``[d.text for d in lenssample.data.wikipedia("train")]``.
        layers: ``"all"`` or layer numbers (the final layer is always included).
        lens: the lens to fit through (default the logit lens).
        max_tokens: about how many next-token targets to fit on.
        window: tokens per forward pass.

    ``result.strategy`` of the :class:`FitResult` decodes or scores with the fitted weights.
    """
    check_tokenizer(model, tokenizer)
    num_layers = model_parts(model).num_layers
    chosen = tuple(sorted({*LayerEnsemble(layers=layers).layers(num_layers), num_layers}))
    windows = token_windows(texts, tokenizer, seq_len=window, max_positions=max_tokens)
    if not windows:
        raise ValueError("the texts hold no window of at least 8 tokens; give more text to fit on")
    table = torch.cat([layer_token_log_probs(model, ids[None], chosen, lens=lens) for ids in windows])
    weights, nll = fit_mixture_weights(table.double().cpu().numpy())
    weights = tuple(float(w) for w in weights)
    strategy = LayerEnsemble(layers=list(chosen), weights=list(weights))
    return FitResult(strategy, chosen, weights, nll, float(-table[:, -1].double().mean()), table.shape[0])
