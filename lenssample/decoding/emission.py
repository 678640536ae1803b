"""The emission policy: where generated tokens go and when a row is finished, for every loop and schedule.

One policy: a token is appended to its row; a row finishes at an EOS id, when a stopping criterion (transformers'
``StoppingCriteria``, stop strings included) says so, or when ``max_new_tokens`` are out; a finished row is filled
with the pad token while other rows go on; a streamer sees the prompt, then every token as it is emitted, then
``end()`` once. The per-token loop emits a token for every row at each step; schedules, which decode row by row,
start one :class:`Emitter` per row and emit as many tokens per cycle as they accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, StopStringCriteria


@dataclass(frozen=True)
class EmissionPolicy:
    """When rows stop and who hears about their tokens.

    Attributes:
        max_new_tokens: the budget of every row.
        eos_token_ids: ``[n_eos]`` ids that finish a row, or ``None``.
        pad_token_id: fills finished rows.
        stopping_criteria: transformers criteria, called as ``criteria(sequences, None) -> [batch] bool``.
        streamer: a transformers streamer (``put``/``end``), or ``None``.
    """

    max_new_tokens: int
    eos_token_ids: torch.Tensor | None
    pad_token_id: int
    stopping_criteria: StoppingCriteriaList | None = None
    streamer: Any = None

    def start(self, input_ids: torch.Tensor) -> Emitter:
        """An :class:`Emitter` for rows whose prompt is ``input_ids: [batch, n]`` (streamed at once)."""
        return Emitter(self, input_ids)


class Emitter:
    """The rows being generated under an :class:`EmissionPolicy`.

    Attributes:
        sequences: ``[batch, n + emitted]`` the prompt and every token emitted so far (pad after a row finished).
        unfinished: ``[batch]`` bool.
        emitted: tokens emitted per row so far.
    """

    def __init__(self, policy: EmissionPolicy, input_ids: torch.Tensor) -> None:
        self.policy = policy
        self.sequences = input_ids
        self.prompt_length = input_ids.shape[1]
        self.unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        self.emitted = 0
        self._ended = False
        if policy.streamer is not None:
            policy.streamer.put(input_ids.cpu())

    @property
    def done(self) -> bool:
        return self.emitted >= self.policy.max_new_tokens or not bool(self.unfinished.any())

    @property
    def remaining(self) -> int:
        return self.policy.max_new_tokens - self.emitted

    @property
    def new_tokens(self) -> torch.Tensor:
        """``[batch, emitted]``."""
        return self.sequences[:, self.prompt_length :]

    def with_tokens(self, tokens: list[int]) -> torch.Tensor:
        """``[1, n + emitted + len(tokens)]``: a one-row sequence followed by tokens not emitted yet (drafts)."""
        tail = torch.tensor([tokens], dtype=torch.long, device=self.sequences.device)
        return torch.cat([self.sequences, tail], dim=-1)

    def emit(self, tokens: torch.Tensor) -> bool:
        """Append ``tokens: [batch]`` (one per row); returns whether generation is done (and then ends the stream)."""
        assert not self.done, "emit after the emitter is done"
        policy = self.policy
        tokens = torch.where(self.unfinished, tokens, torch.full_like(tokens, policy.pad_token_id))
        self.sequences = torch.cat([self.sequences, tokens[:, None]], dim=-1)
        self.emitted += 1
        if policy.streamer is not None:
            policy.streamer.put(tokens.cpu())
        if policy.eos_token_ids is not None:
            self.unfinished &= ~torch.isin(tokens, policy.eos_token_ids)
        if policy.stopping_criteria:
            self.unfinished &= ~policy.stopping_criteria(self.sequences, None).to(self.unfinished.device)
        if self.done:
            self.end()
        return self.done

    def emit_many(self, tokens: list[int]) -> int:
        """Emit the tokens of a one-row emitter in order until it is done; returns how many were emitted."""
        count = 0
        for token in tokens:
            count += 1
            if self.emit(torch.tensor([token], device=self.sequences.device)):
                break
        return count

    def end(self) -> None:
        """Tell the streamer the stream is over (once)."""
        if self.policy.streamer is not None and not self._ended:
            self.policy.streamer.end()
        self._ended = True


class DecodedStopStrings(StoppingCriteria):
    """Stop strings checked on decoded text, for tokenizers whose vocabulary transformers' ``StopStringCriteria``
    cannot map (it spells every token after a fixed prefix, which a word-level tokenizer cannot encode).

    A row is done when a stop string occurs in the decoded text of its last tokens and ends inside the newest one
    (enough tokens are decoded to hold the longest stop string: every token but special ones spells at least one
    character). Slower than the table transformers builds (one ``decode`` per row and step), so used only as its
    fallback (:func:`stop_string_criteria`)."""

    def __init__(self, tokenizer: Any, stop_strings: list[str]) -> None:
        self.tokenizer, self.stop_strings = tokenizer, list(stop_strings)
        self.window = max(map(len, self.stop_strings)) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        done = []
        for row in input_ids.tolist():
            text = self.tokenizer.decode(row[-self.window :], skip_special_tokens=False)
            before = len(self.tokenizer.decode(row[-self.window : -1], skip_special_tokens=False))
            # an occurrence ending inside the newest token starts after `before - len(s)`
            done.append(any(s in text[max(0, before - len(s) + 1) :] for s in self.stop_strings))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stop_string_criteria(tokenizer: Any, stop_strings: list[str]) -> StoppingCriteria:
    """transformers' ``StopStringCriteria``, or :class:`DecodedStopStrings` where it cannot map the tokenizer."""
    try:
        return StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings)
    except ValueError:  # "substring not found": a token it cannot spell after its fixed prefix
        return DecodedStopStrings(tokenizer, stop_strings)
