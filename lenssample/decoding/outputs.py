"""Outputs of generation: sequences plus a per-step trace of what the strategy read and decided."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """

    layers: tuple[int, ...]
    info: dict[str, torch.Tensor] = field(default_factory=dict)
    blocks_per_step: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "layers": list(self.layers),
            "info": {key: value.tolist() for key, value in self.info.items()},
            "blocks_per_step": self.blocks_per_step,
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

    @property
    def new_tokens(self) -> torch.Tensor:
        """``[batch, new]`` the generated tokens only."""
        return self.sequences[:, self.prompt_length :]

    def texts(self, tokenizer, *, skip_special_tokens: bool = True) -> list[str]:
        """Decoded generated text of each row."""
        return tokenizer.batch_decode(self.new_tokens, skip_special_tokens=skip_special_tokens)
