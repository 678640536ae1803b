"""The prompt at the API boundary: text tokenized and left-padded, or token ids and their mask validated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lenssample.validation import check_attention_mask, check_text, check_token_ids, check_tokenizer


@dataclass
class Prompt:
    """Validated model inputs.

    Attributes:
        input_ids: ``[batch, seq]`` left-padded token ids.
        attention_mask: ``[batch, seq]``, or ``None`` when there is no padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None

    def rows(self) -> list[torch.Tensor]:
        """Each row without its padding, ``[1, n_row]``."""
        if self.attention_mask is None:
            return [row[None] for row in self.input_ids]
        return [row[mask.bool()][None] for row, mask in zip(self.input_ids, self.attention_mask)]


def _is_text(inputs: Any) -> bool:
    if isinstance(inputs, str):
        return True
    return isinstance(inputs, Sequence) and bool(inputs) and all(isinstance(item, str) for item in inputs)


def prepare_prompt(
    model: nn.Module,
    inputs: torch.Tensor | str | Sequence[str],
    *,
    attention_mask: torch.Tensor | None,
    tokenizer: Any,
    vocab_size: int,
) -> Prompt:
    """Tokenize (strings, left-padded) or validate (token ids: in the vocabulary, a 0/1 mask with left padding).

    Raises:
        ValueError / TypeError: naming what is wrong and the fix.
    """
    check_tokenizer(model, tokenizer, vocab_size)
    device = next(model.parameters()).device
    if _is_text(inputs):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if tokenizer is None:
            raise ValueError(
                "a text prompt needs tokenizer=...; pass the tokenizer from lenssample.load_model"
            )
        if any(not t for t in texts):
            raise ValueError("prompt is empty; pass at least one character of text")
        for text in texts:
            check_text(text, field="prompt")
        if attention_mask is not None:
            raise ValueError(
                "attention_mask goes with token ids; a text prompt is tokenized and padded for you"
            )
        old_side, old_pad = tokenizer.padding_side, tokenizer.pad_token
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            encoded = tokenizer(texts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side, tokenizer.pad_token = old_side, old_pad
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device)
        if input_ids.shape[1] == 0:
            raise ValueError("prompt is empty after tokenization; pass some text")
        empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
        if empty:  # e.g. a whitespace-only prompt in a batch: a row of padding alone would decode garbage
            raise ValueError(
                f"prompt {empty[0]} of the batch ({texts[empty[0]]!r}) is empty after tokenization; give every "
                "prompt some text"
            )
        input_ids = check_token_ids(input_ids, vocab_size)
    elif isinstance(inputs, torch.Tensor):
        if inputs.numel() == 0:
            raise ValueError(
                f"input_ids has shape {tuple(inputs.shape)}; the prompt is empty. Pass [batch, seq] ids with seq >= 1"
            )
        input_ids = check_token_ids(inputs, vocab_size).to(device)
        attention_mask = check_attention_mask(attention_mask, input_ids, padding="left")
    else:
        hint = ("; that looks like the tokenizer: pass it as tokenizer=..., e.g. generate(model, 'text', "
                "tokenizer=tokenizer)") if callable(getattr(inputs, "encode", None)) else ""
        raise TypeError(
            f"inputs must be a LongTensor of token ids, a string or a list of strings, got {type(inputs).__name__}"
            f"{hint}"
        )
    if attention_mask is not None and bool((attention_mask == 1).all()):
        attention_mask = (
            None  # no padding: let the model take its fast, mask-free path (as model.generate does)
        )
    return Prompt(input_ids=input_ids, attention_mask=attention_mask)
