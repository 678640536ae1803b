"""Token windows: texts cut into model inputs, never crossing a document boundary.

The one way lenssample turns a corpus into teacher-forced inputs for lens training, lens evaluation, fitted weights
and the observations (perplexity has its own rolling windows with overlap: :mod:`lenssample.eval.perplexity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lenssample.validation import check_int


def token_windows(
    texts: Sequence[Any], tokenizer: Any, *, seq_len: int, min_len: int = 8, max_positions: int | None = None
) -> list[torch.Tensor]:
    """Cut each text into windows (1-D LongTensors of token ids, in text order) of at most ``seq_len`` tokens;
    remainders shorter than ``min_len`` (at least 2: one input and one target) are dropped.

    ``texts``: strings, :class:`~lenssample.data.Document` s (encoded without special tokens by ``tokenizer``), or
    1-D integer tensors of token ids. ``max_positions``: stop once the windows hold this many predicting positions
    (``len - 1`` each), the last window shortened to land on it exactly (unless that remainder is shorter than
    ``min_len``); ``None``: every window of every text.
    """
    min_len = check_int(min_len, field="min_len", low=2)
    seq_len = check_int(seq_len, field="seq_len", low=min_len)
    if max_positions is not None:
        max_positions = check_int(max_positions, field="max_positions", low=1)
    if isinstance(texts, (str, torch.Tensor)) or not isinstance(texts, Sequence):
        raise TypeError(
            f"texts must be a list of strings, Documents or 1-D token-id tensors, got {type(texts).__name__}; "
            "wrap a single text in a list"
        )
    windows: list[torch.Tensor] = []
    covered = 0
    for i, item in enumerate(texts):
        ids = _token_ids(item, tokenizer, i)
        for start in range(0, ids.numel(), seq_len):
            window = ids[start : start + seq_len]
            if max_positions is not None:
                window = window[: max_positions - covered + 1]
            if window.numel() >= min_len:
                windows.append(window)
                covered += window.numel() - 1
            if max_positions is not None and max_positions - covered + 1 < min_len:
                return windows  # what is left to cover is shorter than any window kept
    return windows


def _token_ids(item: Any, tokenizer: Any, index: int) -> torch.Tensor:
    if isinstance(item, torch.Tensor):
        if item.dim() != 1 or item.dtype not in (torch.long, torch.int):
            raise TypeError(f"texts[{index}] is a tensor of shape {tuple(item.shape)}; pass 1-D token ids")
        return item.long()
    text = getattr(item, "text", item)
    if not isinstance(text, str):
        raise TypeError(f"texts[{index}] is a {type(item).__name__}; pass strings, Documents or token ids")
    if tokenizer is None:
        raise ValueError("texts are strings, so tokenizer is required; pass the model's tokenizer")
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def leading_token_ids(tokenizer: Any) -> list[int]:
    """``[bos]`` when ``tokenizer`` puts its BOS first by default, else ``[]``: what goes before text encoded without
    special tokens. Models trained always to see their BOS first (Gemma) predict nonsense without it: Gemma-3-270M's
    perplexity on a Wikipedia paragraph is 13 with it, 288 without."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if not isinstance(bos, int) or not callable(tokenizer):
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if len(ids) and ids[0] == bos else []
