"""How a token is picked: greedy or sampling, after transformers' own logits processors.

The processors are transformers' classes (repetition penalty, temperature, top-k, top-p, min-p), built in the same
order as ``model.generate`` builds them, so that a seeded sampling run picks the same tokens as transformers does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def build_processors(
    *,
    do_sample: bool,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
) -> LogitsProcessorList:
    """Validated transformers processors; warpers only when sampling (as in ``model.generate``).

    Raises:
        ValueError: naming the parameter, its value and the valid range.
    """
    processors = LogitsProcessorList()
    if repetition_penalty is not None:
        if not repetition_penalty > 0:
            raise ValueError(f"repetition_penalty={repetition_penalty} must be > 0 (1.0 means no penalty)")
        if repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(repetition_penalty)))
    checks = {
        "temperature": (temperature, lambda v: v > 0, "> 0"),
        "top_k": (top_k, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        "top_p": (top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
        "min_p": (min_p, lambda v: 0 <= v <= 1, "in [0, 1]"),
    }
    for name, (value, ok, rule) in checks.items():
        if value is not None and not ok(value):
            raise ValueError(f"{name}={value!r} must be {rule}")
    if not do_sample:
        given = [
            n for n, (v, _, _) in checks.items() if v is not None and not (n == "temperature" and v == 1.0)
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply when sampling; pass do_sample=True (CLI: --sample) or drop them"
            )
        return processors
    if temperature is not None and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        processors.append(TopKLogitsWarper(top_k=int(top_k), min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=float(top_p), min_tokens_to_keep=1))
    if min_p is not None and min_p > 0:
        processors.append(MinPLogitsWarper(min_p=float(min_p), min_tokens_to_keep=1))
    return processors


@dataclass
class TokenPicker:
    """Apply processors to next-token logits, then take the argmax or sample.

    Attributes:
        processors: transformers ``LogitsProcessorList`` (called as ``processors(input_ids, logits)``).
        do_sample: sample from ``softmax(logits)`` instead of taking the argmax.
        generator: random generator for sampling; ``None`` uses torch's global one (as ``model.generate`` does).
    """

    processors: LogitsProcessorList
    do_sample: bool = False
    generator: torch.Generator | None = None

    def process(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits: [batch, vocab]`` -> processed logits, checked to be a proper distribution per row."""
        processed = self.processors(input_ids, logits) if self.processors else logits
        # The invariant every strategy and processor must keep: at least one finite score per row, no NaN.
        if torch.isnan(processed).any() or not torch.isfinite(processed).any(dim=-1).all():
            raise RuntimeError(
                "next-token logits have a NaN or an all -inf row; a strategy or logits processor produced an "
                "invalid distribution (please report it with the strategy's to_dict())"
            )
        return processed

    def pick(self, processed: torch.Tensor) -> torch.Tensor:
        """``processed: [batch, vocab]`` -> ``[batch]`` token ids."""
        if not self.do_sample:
            return torch.argmax(processed, dim=-1)
        probs = torch.softmax(processed, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)
