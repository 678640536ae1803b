"""Pick a self-speculative draft (layer ``E`` or a skip set) and ``k`` for a model from sample text, or none.

Acceptance is estimated teacher-forced: on the sample text, how often the draft's argmax equals the full model's
argmax at the same position (one forward pass for all layer drafts, one per skip set). Assuming each draft token is
accepted independently with that probability, :func:`~lenssample.schedules.speculative.predicted_speedup` gives the
expected tokens per block-equivalent of every ``(draft, k)``; the best is returned when it is predicted to beat
plain decoding, and ``None`` (decode plainly) otherwise, so asking for speculation cannot make a user slower on the
strength of the cost model. Text the model generated itself is the best sample: drafts agree more with it than
with human text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lenssample.lens.base import Lens, as_lens
from lenssample.lens.passes import lens_pass
from lenssample.model.adapters import model_parts
from lenssample.model.capture import run_layers
from lenssample.model.surgery import SkippedBlock, replaced_blocks
from lenssample.schedules.drafts import LayerDraft, SkipDraft
from lenssample.schedules.speculative import SelfSpeculative, best_k


@dataclass
class SpeculativeChoice:
    """Result of :func:`choose_self_speculative`."""

    schedule: SelfSpeculative | None  # the best (adaptive k, starting from the best k); None: decode plainly
    predicted_speedup: float  # the cost model's speed-up of the best candidate (<= 1 when schedule is None)
    # One row per candidate: draft, acceptance, best_k, predicted_speedup.
    table: list[dict] = field(default_factory=list)


def choose_self_speculative(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    lens: Lens | None = None,
    layers: Sequence[int] | None = None,
    skips: Sequence[Sequence[int]] | None = None,
    max_k: int = 8,
    lens_cost: float = 2.0,
) -> SpeculativeChoice:
    """Estimate acceptance of each candidate draft on ``input_ids: [1, seq]`` and pick the best ``(draft, k)``.

    Args:
        input_ids: ``[1, seq]`` sample text (ideally the model's own generation), seq >= 2.
        lens: lens for layer drafts (default logit lens; a tuned lens makes layer drafts far better).
        layers: candidate draft layers (default a spread of ``L``).
        skips: candidate skip sets of 0-based block indices (default a few in the upper half).
        max_k: largest draft length considered.
        lens_cost: cost of a lens projection in blocks (see :class:`SelfSpeculative`).
    """
    parts, lens = model_parts(model), as_lens(model, lens)
    num_layers = parts.num_layers
    if input_ids.dim() != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] < 2:
        raise ValueError(f"input_ids must be [1, seq], seq >= 2 sample tokens; got {tuple(input_ids.shape)}")
    if layers is None:
        layers = sorted({max(1, round(num_layers * f)) for f in (0.25, 0.5, 0.67, 0.8, 0.9)} - {num_layers})
    if skips is None:
        upper = range(num_layers // 2, num_layers - 1)
        skips = [(num_layers // 2,), (num_layers - 2,), upper[::2], upper[::4]]
    drafts = [LayerDraft(layer=layer) for layer in layers] + [SkipDraft(skip=tuple(skip)) for skip in skips]
    for draft in drafts:
        draft.check(num_layers)
    table = []
    with torch.inference_mode():
        wanted = tuple(sorted({*layers, num_layers}))
        passed = lens_pass(model, input_ids, wanted)  # all candidate layers from one forward pass
        top = torch.cat([chunk.logits.argmax(-1) for chunk in passed.chunks(lens, copies=1)])  # [seq, n]
        for draft in drafts:
            if isinstance(draft, LayerDraft):
                guess = top[:, wanted.index(draft.layer)]
            else:
                with replaced_blocks(parts, {index: SkippedBlock() for index in draft.skip}):
                    skipped = run_layers(model, input_ids, (num_layers,), use_cache=False, keep=None)
                guess = lens(skipped.hidden[0], (num_layers,))[:, 0].argmax(-1)
            acceptance = float((guess == top[:, -1]).float().mean())
            k, speed = best_k(draft, acceptance, max_k, num_layers, lens_cost)
            table.append(
                dict(draft=draft.to_spec(), acceptance=acceptance, best_k=k, predicted_speedup=speed)
            )
    index = max(range(len(table)), key=lambda i: table[i]["predicted_speedup"])
    best, schedule = table[index], None
    if best["predicted_speedup"] > 1.0:
        schedule = SelfSpeculative(draft=drafts[index], k=best["best_k"], adaptive=True, max_k=max_k,
                                   prior_acceptance=best["acceptance"], lens_cost=lens_cost)  # fmt: skip
    return SpeculativeChoice(schedule=schedule, predicted_speedup=best["predicted_speedup"], table=table)
