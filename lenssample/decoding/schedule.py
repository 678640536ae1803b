"""Compute schedules other than "one full (or truncated) pass per token": the pieces they share.

A *schedule* (concern 2 of the design: how compute is scheduled) is an object passed to
``lenssample.generate(..., schedule=...)`` or ``lenssample.hf.decoder(schedule=...)``. It owns the loop: early exit
(:class:`~lenssample.strategies.early_exit.EarlyExit`) stops each token at a confident layer, self-speculative
decoding (:class:`~lenssample.decoding.speculative.SelfSpeculative`) drafts and verifies several tokens per pass.

Schedules decode a batch row by row (a row's compute depends on its own exit layers / accepted counts, and a
ragged batch would need per-row cache lengths that transformers' caches do not hold). Each row is decoded without
its left padding, which is the same computation the padded batch does up to float round-off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteriaList

from lenssample.decoding.loop import Prompt
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.sampling import TokenPicker
from lenssample.lens.base import Lens


class Schedule:
    """Base class of compute schedules (see the module docstring); subclasses are frozen dataclasses."""

    name: str = "schedule"

    def check_model(self, num_layers: int) -> None:
        """Validate the schedule against a model with ``num_layers`` blocks (``ValueError`` naming the field)."""

    def decode(
        self, model: nn.Module, prompt: Prompt, *, lens: Lens, picker: TokenPicker, **kwargs: Any
    ) -> GenerateOutput:
        raise NotImplementedError


@dataclass
class RowWriter:
    """Collects one row's generated tokens and decides when the row is finished.

    Attributes:
        prompt_ids: ``[1, n]`` the row's prompt without padding.
        max_new_tokens: budget.
        eos_token_ids: ``[n_eos]`` or ``None``.
        stopping_criteria: transformers criteria, called on ``[1, n + new]``.
        streamer: transformers streamer (``put`` per emitted token).
    """

    prompt_ids: torch.Tensor
    max_new_tokens: int
    eos_token_ids: torch.Tensor | None = None
    stopping_criteria: StoppingCriteriaList | None = None
    streamer: Any = None
    tokens: list[int] = field(default_factory=list)
    done: bool = False

    def sequence(self, extra: list[int] | None = None) -> torch.Tensor:
        """``[1, n + new (+ extra)]`` the row so far."""
        ids = self.tokens + (extra or [])
        tail = torch.tensor([ids], dtype=torch.long, device=self.prompt_ids.device)
        return torch.cat([self.prompt_ids, tail], dim=-1)

    @property
    def remaining(self) -> int:
        return self.max_new_tokens - len(self.tokens)

    def emit(self, token: int) -> bool:
        """Append one token; returns ``True`` once the row is finished (EOS, criteria or budget)."""
        assert not self.done
        self.tokens.append(int(token))
        if self.streamer is not None:
            self.streamer.put(torch.tensor([int(token)]))
        if self.eos_token_ids is not None and bool((self.eos_token_ids == int(token)).any()):
            self.done = True
        elif self.stopping_criteria and bool(self.stopping_criteria(self.sequence(), None).any()):
            self.done = True
        elif self.remaining <= 0:
            self.done = True
        return self.done


def row_prompts(prompt: Prompt) -> list[torch.Tensor]:
    """The rows of a (left-padded) prompt without their padding, each ``[1, n_row]``."""
    rows = []
    for row in range(prompt.input_ids.shape[0]):
        ids = prompt.input_ids[row]
        if prompt.attention_mask is not None:
            ids = ids[prompt.attention_mask[row].bool()]
        rows.append(ids[None])
    return rows


def decode_rows(
    prompt: Prompt,
    decode_row: Callable[[RowWriter], dict[str, list[float]]],
    *,
    max_new_tokens: int,
    eos_token_ids: torch.Tensor | None,
    pad_token_id: int | None,
    stopping_criteria: StoppingCriteriaList | None,
    streamer: Any,
    layers: tuple[int, ...],
    blocks: Callable[[list[dict[str, list[float]]], int], float],
    trace_cls: type[Trace] = Trace,
    trace_kwargs: Callable[[list[dict[str, list[float]]]], dict] | None = None,
) -> GenerateOutput:
    """Run ``decode_row`` on every row and assemble a batch :class:`GenerateOutput`.

    ``decode_row(writer)`` emits the row's tokens through ``writer`` and returns its per-step trace
    ``{key: [values]}``. Rows shorter than the longest are filled with ``pad_token_id`` (else the first EOS id, else
    0); per-step trace values of rows with fewer steps are filled with ``-1``.
    """
    batch = prompt.input_ids.shape[0]
    if streamer is not None:
        streamer.put(prompt.input_ids.cpu())
    writers, traces = [], []
    for ids in row_prompts(prompt):
        writer = RowWriter(
            ids, max_new_tokens, eos_token_ids, stopping_criteria, streamer if batch == 1 else None
        )
        traces.append(decode_row(writer))
        writers.append(writer)
    if streamer is not None:
        streamer.end()
    if pad_token_id is None:
        pad_token_id = int(eos_token_ids[0]) if eos_token_ids is not None else 0
    longest = max(len(w.tokens) for w in writers)
    new = torch.full((batch, longest), int(pad_token_id), dtype=torch.long, device=prompt.input_ids.device)
    for row, writer in enumerate(writers):
        new[row, : len(writer.tokens)] = torch.tensor(writer.tokens, dtype=torch.long)
    keys = sorted({key for trace in traces for key in trace})
    info = {}
    for key in keys:
        steps = max(len(trace.get(key, [])) for trace in traces)
        table = torch.full((batch, steps), -1.0)
        for row, trace in enumerate(traces):
            values = trace.get(key, [])
            table[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        info[key] = table
    tokens = sum(len(w.tokens) for w in writers)
    trace = trace_cls(
        layers=layers,
        info=info,
        blocks_per_step=blocks(traces, tokens),
        **(trace_kwargs(traces) if trace_kwargs else {}),
    )
    return GenerateOutput(
        sequences=torch.cat([prompt.input_ids, new], dim=-1),
        prompt_length=prompt.input_ids.shape[1],
        trace=trace,
        attention_mask=prompt.attention_mask,
    )


def check_schedule(schedule: Any, strategy: Any, num_layers: int) -> None:
    """API-boundary check of ``schedule=`` (a :class:`Schedule`, not combined with a strategy)."""
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"schedule must be a lenssample schedule (EarlyExit(...), SelfSpeculative(...)), got "
            f"{type(schedule).__name__}"
        )
    if strategy is not None and type(strategy).__name__ != "FinalLayer":
        raise ValueError(
            f"schedule={schedule.name!r} decodes from the final layer (or its own exit layer); drop strategy="
            f"{type(strategy).__name__}(...) or the schedule"
        )
    schedule.check_model(num_layers)
