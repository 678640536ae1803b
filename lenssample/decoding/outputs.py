"""Outputs of generation: sequences plus a per-step trace of what the strategy read and decided."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Trace:
    """What happened at each generated token.

    Attributes:
        layers: the layers the strategy read at every step.
        info: per-step decisions, each ``[batch, steps]``: e.g. ``premature_layer`` (DoLa), ``exit_layer`` (early
            exit), ``accepted`` (speculative decoding). Rows that had already finished hold the value of their
            last real step.
        blocks_per_step: how many transformer blocks ran per generated token, averaged over steps.
        compile_seconds: with ``compile=True``, the wall time of the call that compiled the step (the cold
            compile, reported apart from decoding time); ``0.0`` when an earlier call's compiled step was reused,
            ``None`` on the eager path.
    """

    layers: tuple[int, ...]
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    blocks_per_step: float = 0.0
    compile_seconds: float | None = None

    @staticmethod
    def row_info(rows: list[dict[str, list[float]]]) -> dict[str, torch.Tensor]:
        """Per-row step records (``{key: [values]}``, rows of unequal length) as ``[batch, steps]`` tensors,
        rows with fewer steps filled with ``-1``."""
        info = {}
        for key in sorted({key for row in rows for key in row}):
            steps = max(len(row.get(key, [])) for row in rows)
            table = torch.full((len(rows), steps), -1.0)
            for index, row in enumerate(rows):
                values = row.get(key, [])
                table[index, : len(values)] = torch.tensor(values, dtype=torch.float32)
            info[key] = table
        return info

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "layers": list(self.layers),
            "info": {key: value.tolist() for key, value in self.info.items()},
            "blocks_per_step": self.blocks_per_step,
            **({} if self.compile_seconds is None else {"compile_seconds": self.compile_seconds}),
        }


@dataclass
class GenerateOutput:
    """Result of :func:`lenssample.generate`.

    Attributes:
        sequences: ``[batch, prompt_length + new]`` prompt (left-padded when batched) followed by generated tokens;
            finished rows are filled with the pad token.
        prompt_length: length of the (padded) prompt part of ``sequences``.
        trace: per-step trace.
        attention_mask: ``[batch, prompt_length]`` mask of the prompt (1 = real token).
    """

    sequences: torch.Tensor
    prompt_length: int
    trace: Trace
    attention_mask: torch.Tensor | None = None

    @classmethod
    def from_rows(
        cls, prompt: Any, rows: list[torch.Tensor], pad_token_id: int, trace: Trace
    ) -> GenerateOutput:
        """Rows decoded one at a time (``rows``: each row's generated tokens ``[n_new]``) after the padded prompt,
        shorter rows filled with ``pad_token_id``."""
        longest = max(len(row) for row in rows)
        new = torch.full(
            (len(rows), longest), int(pad_token_id), dtype=torch.long, device=prompt.input_ids.device
        )
        for index, row in enumerate(rows):
            new[index, : len(row)] = row
        return cls(
            sequences=torch.cat([prompt.input_ids, new], dim=-1),
            prompt_length=prompt.input_ids.shape[1],
            trace=trace,
            attention_mask=prompt.attention_mask,
        )

    @property
    def new_tokens(self) -> torch.Tensor:
        """``[batch, new]`` the generated tokens only."""
        return self.sequences[:, self.prompt_length :]

    def texts(self, tokenizer, *, skip_special_tokens: bool = True) -> list[str]:
        """Decoded generated text of each row."""
        return tokenizer.batch_decode(self.new_tokens, skip_special_tokens=skip_special_tokens)
