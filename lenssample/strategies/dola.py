"""DoLa: decoding by contrasting layers (Chuang et al. 2023, arXiv 2309.03883).

Terms: the *mature* layer is the final layer ``L``; a *premature* layer is an earlier one. At each position DoLa
contrasts the two inside the *adaptive plausibility set* ``V = {x: q_L(x) >= alpha * max q_L}``::

    F(x) = log q_L(x) - log q_premature(x)   for x in V,   excluded_logit (-inf) outside.

:class:`DoLa` picks the premature layer per row (per sequence in generation, per position in scoring) as the
candidate with the largest Jensen-Shannon divergence from the mature layer; :class:`DoLaStatic` uses a fixed one.
Both read intermediate layers through the final-normed lens (the correct logit lens, or a tuned lens).

:class:`DoLaReference` reproduces transformers 4.43-4.55 ``model.generate(dola_layers=...)`` token for token,
including its departures from the paper (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from lenssample.stats import floored_log_probs, js_divergence
from lenssample.strategies.base import Strategy, StrategyOutput, register_strategy
from lenssample.strategies.fields import (
    LOGIT_LIMIT,
    LayersField,
    LayerSpec,
    check_layer,
    check_plausibility,
    masked_scores,
    plausible,
    premature_and_mature,
)
from lenssample.validation import check_bool


def start_layer(num_layers: int, tie_word_embeddings: bool = True) -> int:
    """First candidate layer of the ``"low"`` bucket, as transformers 4.55 chooses it.

    With tied embeddings the embedding layer (0) is skipped, since unembedding it mostly echoes the input token; a
    model of 2 layers starts at 1 and one of 1 layer at 0.
    """
    return min(2, num_layers - 1) if tie_word_embeddings and num_layers > 1 else 0


def dola_buckets(num_layers: int, start: int) -> dict[str, tuple[int, ...]]:
    """The ``"low"`` and ``"high"`` candidate buckets of the reference (every other layer).

    For ``N <= 40`` layers: low = ``range(start, N // 2, 2)``, high = ``range(N // 2, N, 2)``; deeper models use
    ``range(start, 20, 2)`` and ``range(N - 20, N, 2)``. When ``start == N // 2`` the low bucket is ``[start]``.
    """
    n = num_layers
    low = (start,) if start == n // 2 else tuple(range(start, n // 2 if n <= 40 else 20, 2))
    return {"low": low, "high": tuple(range(n // 2 if n <= 40 else n - 20, n, 2))}


@register_strategy
@dataclass(frozen=True, kw_only=True)
class DoLa(Strategy):
    """DoLa with a dynamic premature layer chosen per row by Jensen-Shannon divergence.

    Improves on transformers 4.55's implementation: final-normed lens, the true JSD (summed over the vocabulary),
    one premature layer per row (so a batch gives the same tokens as each prompt alone), ``alpha`` configurable and
    invalid layer lists rejected rather than silently dropped.

    Args:
        layers: candidate premature layers: ``"low"``, ``"high"`` (the reference's buckets, every other layer,
            starting at layer 2 to skip the embedding) or explicit layer numbers ``< L``.
        alpha: plausibility cut-off in ``(0, 1]`` (paper default 0.1).
        excluded_logit: score outside the plausibility set: ``-inf`` for generation, e.g. ``-1000`` for likelihood
            scoring as in the paper's multiple-choice evaluation.

    ``info["premature_layer"]``: ``[rows]`` the chosen layer.
    """

    name: ClassVar[str] = "dola"
    layers: LayerSpec = LayersField("high", ("low", "high"))  # type: ignore[assignment]
    alpha: float = 0.1
    excluded_logit: float = -math.inf

    def __post_init__(self) -> None:
        check_plausibility(self)

    def candidates(self, num_layers: int) -> tuple[int, ...]:
        """The candidate premature layers for a model of ``num_layers`` blocks (sorted)."""
        buckets = dola_buckets(num_layers, start_layer(num_layers))
        presets = {key: (lambda n, key=key: buckets[key]) for key in buckets}
        return tuple(sorted(self.layers.resolve(num_layers, presets, allow_final=False)))

    def read_layers(self, num_layers: int) -> tuple[int, ...]:
        """The candidates and the mature layer ``L`` (what ``layers(num_layers)`` returns)."""
        return (*self.candidates(num_layers), num_layers)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        log_probs = floored_log_probs(lens_logits)  # [rows, n_layers, vocab]
        mature, premature = log_probs[:, -1], log_probs[:, :-1]
        jsd = js_divergence(mature[:, None], premature)  # [rows, n_candidates]
        choice = jsd.argmax(dim=-1)  # first maximum on ties
        chosen = premature.gather(1, choice[:, None, None].expand(-1, 1, premature.shape[-1]))[:, 0]
        logits = masked_scores(mature - chosen, plausible(mature, self.alpha), self.excluded_logit)
        candidates = torch.tensor(layers[:-1], device=choice.device)
        return StrategyOutput(logits=logits, info={"premature_layer": candidates[choice]})


@register_strategy
@dataclass(frozen=True, kw_only=True)
class DoLaStatic(Strategy):
    """DoLa with a fixed premature layer (the paper's "DoLa-static").

    Args:
        premature_layer: the layer contrasted with ``L`` (negative counts from the end; must be ``< L``).
        alpha, excluded_logit: as in :class:`DoLa`.
    """

    name: ClassVar[str] = "dola-static"
    premature_layer: int = 16
    alpha: float = 0.1
    excluded_logit: float = -math.inf

    def __post_init__(self) -> None:
        check_layer(self.premature_layer, field="premature_layer", owner=self.name)
        check_plausibility(self)

    def layers(self, num_layers: int) -> tuple[int, ...]:
        return premature_and_mature(self, "premature_layer", num_layers)

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        log_probs = floored_log_probs(lens_logits)
        mature, premature = log_probs[:, -1], log_probs[:, 0]
        logits = masked_scores(mature - premature, plausible(mature, self.alpha), self.excluded_logit)
        return StrategyOutput(logits=logits)


@register_strategy
@dataclass(frozen=True, kw_only=True)
class DoLaReference(Strategy):
    """Transformers 4.43-4.55 ``model.generate(dola_layers=...)``, token for token (parity mode).

    Facts of the reference this reproduces (each a departure from :class:`DoLa`):

    * premature logits are the unembedding of the *raw* residual stream (no final norm: ``apply_final_norm`` is
      False); the mature logits are the model's own;
    * candidates: the ``"low"``/``"high"`` buckets of :func:`dola_buckets`, with ``start`` 2 when the input and
      output embeddings are tied (else 0), ``N`` = ``config.num_hidden_layers``; an explicit list silently drops
      layers ``>= N`` (here: rejected when nothing is left);
    * its "JSD" is ``0.5 * (KL(M || q_N) + KL(M || q_j))`` *averaged* over the vocabulary, then averaged over the
      rows of the batch: **one** premature layer for the whole batch, so a batch can give other tokens than each
      prompt alone (and in scoring, one layer for all positions of the chunk);
    * plausibility cut-off fixed at 0.1, ``-inf`` outside; the contrast is of log-softmaxes;
    * repetition penalty and other processors act on the contrast scores (the decoding loop does this).

    Args:
        layers: ``"low"``, ``"high"`` or a list of layer numbers (kept in the given order; ties go to the first).
        tie_word_embeddings: whether the model ties its embeddings (decides ``start``); use
            :meth:`for_model` to read it from the model's config.

    ``info["premature_layer"]``: ``[rows]`` the layer chosen for the batch (the same in every row).
    """

    name: ClassVar[str] = "dola-reference"
    apply_final_norm: ClassVar[bool] = False
    relative_top: ClassVar[float] = 0.1
    layers: LayerSpec = LayersField("high", ("low", "high"))  # type: ignore[assignment]
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        check_bool(self.tie_word_embeddings, field="tie_word_embeddings", owner=self.name)

    @classmethod
    def for_model(cls, model: torch.nn.Module, *, layers: LayerSpec = "high") -> DoLaReference:
        """The reference's settings for ``model`` (reads ``tie_word_embeddings`` from its config)."""
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        tied = getattr(model.config, "tie_word_embeddings", getattr(config, "tie_word_embeddings", True))
        return cls(layers=layers, tie_word_embeddings=bool(tied))

    def candidates(self, num_layers: int) -> tuple[int, ...]:
        """Candidate layers in the reference's order (buckets ascending, lists as given minus layers >= N)."""
        spec = self.layers.spec
        if isinstance(spec, str):
            return dola_buckets(num_layers, start_layer(num_layers, self.tie_word_embeddings))[spec]
        kept = tuple(layer for layer in spec if layer < num_layers)
        if not kept or any(layer < 0 for layer in kept):
            raise ValueError(
                f"{self.name}: layers={list(spec)!r} has no usable candidate below the final layer "
                f"{num_layers} (or a negative one); pass layers in 0..{num_layers - 1}"
            )
        return kept

    def read_layers(self, num_layers: int) -> tuple[int, ...]:
        """The candidates and the mature layer, sorted (what ``layers(num_layers)`` returns)."""
        return tuple(sorted({*self.candidates(num_layers), num_layers}))

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        mature_logits = lens_logits[:, -1].float()
        candidates = self.candidates(layers[-1])
        # [n_candidates, rows, vocab], in the reference's candidate order.
        premature_logits = torch.stack([lens_logits[:, layers.index(layer)] for layer in candidates]).float()
        index = 0
        if len(candidates) > 1:
            mean_probs = 0.5 * (F.softmax(mature_logits, dim=-1)[None] + F.softmax(premature_logits, dim=-1))
            kl_mature = F.kl_div(F.log_softmax(mature_logits, dim=-1)[None], mean_probs, reduction="none")
            kl_premature = F.kl_div(F.log_softmax(premature_logits, dim=-1), mean_probs, reduction="none")
            # [n_candidates]: averaged over the vocabulary, then over the batch.
            index = int((0.5 * (kl_mature.mean(-1) + kl_premature.mean(-1))).mean(-1).argmax())
        mature_log_probs = mature_logits.log_softmax(dim=-1)
        premature_log_probs = premature_logits[index].log_softmax(dim=-1)
        # The reference keeps tokens at or above max + log(0.1) (its min_tokens_to_keep=1 threshold is the max).
        outside = ~plausible(mature_log_probs, self.relative_top)
        premature_log_probs = premature_log_probs.masked_fill(outside, -1e-3)
        mature_log_probs = mature_log_probs.masked_fill(outside, -math.inf)
        # Clamping changes nothing for real logits; it keeps adversarial inputs (a premature probability that
        # underflows to 0) from producing +inf.
        logits = (mature_log_probs - premature_log_probs).clamp(max=LOGIT_LIMIT)
        chosen = torch.tensor([candidates[index]] * lens_logits.shape[0], device=logits.device)
        return StrategyOutput(logits=logits, info={"premature_layer": chosen})
