"""Compute schedules: objects that own the decoding loop instead of one (full or truncated) pass per token.

A schedule (concern 2 of the design: how compute is scheduled) is a frozen, registered dataclass like a strategy,
named by the same spec syntax (``early-exit:measure=max-prob,threshold=0.9``), and passed as
``lenssample.generate(..., schedule=...)``. Early exit (:mod:`~lenssample.schedules.early_exit`) stops each token
at a confident layer; self-speculative decoding (:mod:`~lenssample.schedules.speculative`) drafts and verifies
several tokens per pass. A schedule decodes from the final layer (or its own exit layer), so it replaces a strategy.

Schedules decode a batch row by row (a row's compute depends on its own exit layers or accepted counts, and a
ragged batch would need per-row cache lengths that transformers' caches do not hold), each row without its left
padding, which is the computation the padded batch does up to float round-off. Every row is emitted through the
same :class:`~lenssample.decoding.emission.EmissionPolicy` as the per-token loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lenssample.decoding.emission import EmissionPolicy, Emitter
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.prompt import Prompt
from lenssample.decoding.sampling import TokenPicker
from lenssample.lens.base import Lens
from lenssample.model.adapters import ModelParts, model_parts
from lenssample.model.capture import LayerOutputs, run_layers
from lenssample.specs import Registry, Spec
from lenssample.strategies.base import FinalLayer, Strategy

SCHEDULES = Registry("schedule")
"""Every schedule class by name (a read-only mapping)."""


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: make a schedule buildable by its ``name``."""
    return SCHEDULES.register(cls)  # type: ignore[return-value]


@dataclass
class Row:
    """One row being decoded: the model, its parts, the lens, the token picker and the row's emitter."""

    model: nn.Module
    parts: ModelParts
    lens: Lens
    picker: TokenPicker
    emitter: Emitter

    def run(self, ids: list[int], start: int, layer: int, cache: Any, keep: int | None = 1) -> LayerOutputs:
        """Feed ``ids`` at positions ``start..`` through the blocks up to ``layer``, appending to ``cache``."""
        device = self.emitter.sequences.device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        positions = torch.arange(start, start + len(ids), device=device)[None]
        return run_layers(self.model, input_ids, (layer,), position_ids=positions, cache=cache, keep=keep)

    def logits(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """``hidden: [positions, d_model]`` -> ``[positions, vocab]`` lens logits of ``layer``."""
        return self.lens(hidden[:, None, :], (layer,))[:, 0]


@dataclass
class RowRun:
    """What decoding one row leaves: its step (or cycle) records ``{key: [values]}`` and the blocks it ran."""

    info: dict[str, list[float]]
    blocks: float


@dataclass(frozen=True, kw_only=True)
class Schedule(Spec):
    """Base class of compute schedules; subclasses implement :meth:`decode_row` (and may :meth:`prepare`)."""

    registry: ClassVar[Registry] = SCHEDULES
    trace_class: ClassVar[type[Trace]] = Trace

    def check_model(self, num_layers: int) -> None:
        """Validate against a model with ``num_layers`` blocks (``ValueError`` naming the field)."""

    def prepare(self, model: nn.Module, lens: Lens) -> Any:
        """State shared by the rows of one call, built (and validated) before any decoding."""
        return None

    def decode_row(self, row: Row, state: Any) -> RowRun:
        """Decode one row (``row.emitter.sequences: [1, n]`` is its prompt) until ``row.emitter.done``."""
        raise NotImplementedError

    def teacher_forced(self) -> Strategy | None:
        """The strategy whose teacher-forced scores are this schedule's (``None`` when there is none)."""
        return None

    def trace_fields(self, runs: list[RowRun]) -> dict[str, Any]:
        """Extra fields of :attr:`trace_class` computed from the rows' records."""
        return {}

    @torch.inference_mode()
    def decode(
        self, model: nn.Module, prompt: Prompt, *, lens: Lens, picker: TokenPicker, policy: EmissionPolicy
    ) -> GenerateOutput:
        """Decode every row of ``prompt``; ``trace.blocks_per_step`` is blocks run per generated token."""
        self.check_model(lens.num_layers)
        state = self.prepare(model, lens)
        runs, rows, parts = [], [], model_parts(model)
        for ids in prompt.rows():
            emitter = policy.start(ids)
            runs.append(self.decode_row(Row(model, parts, lens, picker, emitter), state))
            emitter.end()
            rows.append(emitter.new_tokens[0])
        blocks_per_step = sum(run.blocks for run in runs) / max(sum(len(row) for row in rows), 1)
        info = Trace.row_info([run.info for run in runs])
        trace = self.trace_class(
            layers=(lens.num_layers,), info=info, blocks_per_step=blocks_per_step, **self.trace_fields(runs)
        )
        return GenerateOutput.from_rows(prompt, rows, policy.pad_token_id, trace)


def as_schedule(schedule: Any) -> Schedule | None:
    """A schedule from an object, a spec string (``"early-exit:threshold=0.8"``) or a mapping; ``None`` passes."""
    if schedule is None:
        return None
    if isinstance(schedule, Strategy):
        raise TypeError(f"schedule={schedule.to_spec()!r} is a strategy; pass it as strategy= instead")
    return SCHEDULES.build(schedule)  # type: ignore[return-value]


def check_pair(strategy: Strategy, schedule: Schedule | None, num_layers: int | None = None) -> None:
    """Refuse a schedule combined with a strategy other than the final layer, before any model work; with
    ``num_layers``, also check the schedule against the model."""
    if schedule is None:
        return
    if not isinstance(strategy, FinalLayer):
        raise ValueError(
            f"schedule={schedule.to_spec()!r} decodes from the final layer (or its own exit layer); drop "
            f"strategy={strategy.to_spec()!r} or the schedule"
        )
    if num_layers is not None:
        schedule.check_model(num_layers)
