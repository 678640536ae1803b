"""SLED: self logits evolution decoding (Zhang et al. 2024, arXiv 2411.02433), batched.

Terms: ``l_L`` the final (mature) logits, ``l_j`` the lens logits of an earlier layer ``j``, ``q = softmax(l)``,
``T`` the ``k = evolution_scale`` most likely tokens under ``q_L``. SLED estimates a *latent* distribution
``P`` on ``T`` from how each earlier layer's logits move toward the final ones, then takes one gradient step of
``KL(P || q_L)`` on the final logits:

1. for each layer ``j`` and token ``t`` in ``T``, ``c_{j,t} = cos(q_j - e_t, l_j - l_L)`` (the direction
   ``l_j - l_L`` against the gradient of the cross-entropy at layer ``j`` if ``t`` were the true token);
2. ``v_{j,t} = max(c_{j,t}, 0)^2``; within a layer normalise ``v_{j,.}`` to sum to 1; weigh layers by their raw
   sums ``s_j = sum_t v_{j,t}`` normalised over layers; ``P_t = sum_j (s_j / sum s) (v_{j,t} / s_j)``;
3. ``l_t <- l_L,t - evolution_rate * (q_L,t - P_t)`` for ``t`` in ``T`` (the gradient of ``KL(P || softmax(l))``
   at ``l_L``); every other token gets ``evolution_lower_bound``.

The reference implementation handles one sequence per call; here every row has its own ``T``, weights and step.
The cosine is computed from norms and dot products (``||q_j - e_t||^2 = ||q_j||^2 - 2 q_j,t + 1``), so the
``[layers, k, vocab]`` tensor of gradients the reference builds is never materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lenssample.strategies.base import Strategy, StrategyOutput, register_strategy
from lenssample.strategies.fields import LayersField, LayerSpec
from lenssample.validation import check_int, check_number


def _earlier_layers(num_layers: int) -> tuple[int, ...]:
    # As the reference does for tied embeddings: skip the embedding layer (which through the lens mostly echoes
    # the input token) and start at layer 2 (1 for a 2-layer model).
    start = 2 if num_layers > 2 else min(1, num_layers - 1)
    return tuple(range(start, num_layers))


def latent_distribution(
    final_logits: torch.Tensor, premature_logits: torch.Tensor, top: torch.Tensor
) -> torch.Tensor:
    """SLED's estimate of the latent distribution on the top tokens ``top: [rows, k]`` (the final layer's top-``k``),
    from ``final_logits: [rows, vocab]`` and ``premature_logits: [rows, n_layers, vocab]``: ``[rows, k]``
    non-negative weights summing to 1 per row, or to 0 where no layer points to a top token."""
    finite = premature_logits.isfinite() & final_logits[:, None].isfinite()
    divergence = torch.where(finite, premature_logits - final_logits[:, None], 0.0)  # [rows, n, vocab]
    probs = torch.softmax(premature_logits, dim=-1)
    index = top[:, None].expand(-1, premature_logits.shape[1], -1)  # [rows, n, k]
    dot = (probs * divergence).sum(-1, keepdim=True) - divergence.gather(-1, index)  # (q_j - e_t) . d_j
    probs_at_top = probs.gather(-1, index)
    grad_norm = ((probs * probs).sum(-1, keepdim=True) - 2 * probs_at_top + 1).clamp_min(0).sqrt()
    div_norm = torch.linalg.vector_norm(divergence, dim=-1, keepdim=True)
    cosine = torch.nan_to_num(dot / (grad_norm * div_norm).clamp_min(1e-8), nan=0.0, posinf=0.0, neginf=0.0)
    votes = cosine.clamp_min(0).square()  # [rows, n, k]
    layer_sums = votes.sum(-1, keepdim=True)  # [rows, n, 1]
    within = torch.where(layer_sums > 0, votes / layer_sums.clamp_min(1e-30), 0.0)
    total = layer_sums.sum(1, keepdim=True)
    layer_weights = torch.where(total > 0, layer_sums / total.clamp_min(1e-30), 0.0)
    return (layer_weights * within).sum(1)


@register_strategy
@dataclass(frozen=True, kw_only=True)
class SLED(Strategy):
    """Self logits evolution from the earlier layers (see the module docstring).

    Presets (``sled:preset=NAME``, or ``SLED.from_preset(NAME)``): the authors' per-task settings of
    ``evolution_rate`` / ``evolution_scale``: ``factor`` 2 / 10, ``truthfulqa-mc`` 2.5 / 75, ``strategyqa`` 1.75 / 5,
    ``gsm8k`` 2 / 10. For open generation they report rates 0.5-3 and scales 5-20 with a repetition penalty of
    1.01-1.05 (a decoding setting, not part of the strategy).

    Args:
        layers: the earlier layers: ``"all"`` (``2..L-1``, as the reference for tied embeddings) or explicit
            layer numbers ``< L``.
        evolution_rate: step size ``>= 0`` (reference default 2; 0 leaves the top-``k`` logits unchanged).
        evolution_scale: ``k``, how many top tokens evolve, ``>= 1`` (reference default 10).
        evolution_lower_bound: the logit of every token outside the top ``k`` (reference default -100; ``-inf``
            excludes them).
    """

    name: ClassVar[str] = "sled"
    presets: ClassVar[dict[str, dict[str, float]]] = {
        "factor": {"evolution_rate": 2.0, "evolution_scale": 10},
        "truthfulqa-mc": {"evolution_rate": 2.5, "evolution_scale": 75},
        "strategyqa": {"evolution_rate": 1.75, "evolution_scale": 5},
        "gsm8k": {"evolution_rate": 2.0, "evolution_scale": 10},
    }
    layers: LayerSpec = LayersField("all", ("all",))  # type: ignore[assignment]
    evolution_rate: float = 2.0
    evolution_scale: int = 10
    evolution_lower_bound: float = -100.0

    def __post_init__(self) -> None:
        check_number(self.evolution_rate, field="evolution_rate", owner=self.name, low=0.0, fix="Use e.g. 2.")
        fix = "It counts the top tokens that evolve, e.g. 10."
        check_int(self.evolution_scale, field="evolution_scale", owner=self.name, low=1, fix=fix)
        bound = self.evolution_lower_bound
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound < math.inf:
            raise ValueError(
                f"{self.name}: evolution_lower_bound={bound!r} must be a number (e.g. -100, -inf)"
            )

    def read_layers(self, num_layers: int) -> tuple[int, ...]:
        """The earlier layers and ``L``, sorted (what ``layers(num_layers)`` returns)."""
        earlier = self.layers.resolve(num_layers, {"all": _earlier_layers}, allow_final=False)
        return (*sorted(earlier), num_layers)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        lens_logits = lens_logits.float()
        final = lens_logits[:, -1]
        final_probs = torch.softmax(final, dim=-1)
        k = min(self.evolution_scale, final.shape[-1])
        top = final_probs.topk(k, dim=-1).indices  # [rows, k]
        latent = latent_distribution(final, lens_logits[:, :-1], top)
        evolved = final.gather(-1, top) - self.evolution_rate * (final_probs.gather(-1, top) - latent)
        logits = torch.full_like(final, float(self.evolution_lower_bound)).scatter(-1, top, evolved)
        return StrategyOutput(logits=logits)
