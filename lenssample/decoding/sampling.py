"""How a token is picked: transformers' logits processors, then greedy or sampling.

The processors are transformers' own classes, built in ``model.generate``'s order by
:meth:`~lenssample.decoding.settings.DecodingSettings.processors`, so a seeded sampling run picks the tokens
transformers picks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from lenssample.validation import check_next_token_logits


@dataclass
class TokenPicker:
    """Apply processors to next-token logits, then take the argmax or sample.

    Attributes:
        processors: transformers ``LogitsProcessorList`` (called as ``processors(input_ids, logits)``).
        do_sample: sample from ``softmax(logits)`` instead of taking the argmax.
        generator: random generator for sampling; ``None`` uses torch's global one (as ``model.generate`` does).
        source: who produced the logits, for the message when they are not a distribution.
    """

    processors: LogitsProcessorList
    do_sample: bool = False
    generator: torch.Generator | None = None
    source: str = "the strategy"

    def process(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits: [batch, vocab]`` -> processed logits, checked to be a proper distribution per row."""
        processed = self.processors(input_ids, logits) if self.processors else logits
        # The invariant every strategy and processor must keep: no NaN or +inf, a finite score in every row.
        return check_next_token_logits(processed, source=f"{self.source} (after the logits processors)")

    def pick(self, processed: torch.Tensor) -> torch.Tensor:
        """``processed: [batch, vocab]`` -> ``[batch]`` token ids."""
        if not self.do_sample:
            return torch.argmax(processed, dim=-1)
        probs = torch.softmax(processed, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)
