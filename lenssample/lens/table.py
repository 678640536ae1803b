"""A plain-text logit-lens table: the top-1 token of chosen layers (rows) at chosen positions (columns)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lenssample.adapters import model_parts
from lenssample.lens.apply import apply_lens
from lenssample.lens.base import Lens


def readable_token(tokenizer: Any, token_id: int, width: int = 10) -> str:
    """A token as text with whitespace made visible (space ␣, newline ↵, tab ⇥), cut to ``width``."""
    text = tokenizer.decode([int(token_id)])
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= width else text[: width - 1] + "…"


def lens_table(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    layers: Sequence[int] | None = None,
    last_positions: int = 8,
    lens: Lens | None = None,
    width: int = 10,
) -> str:
    """Render the lens's top-1 prediction per layer and position, with each top token's probability.

    Args:
        model, tokenizer: from :func:`lenssample.load_model`.
        text: the input text (must not be empty).
        layers: rows; default every ~L/8 layers plus the final layer.
        last_positions: how many trailing positions to show as columns.
        lens: default the logit lens.
        width: column width in characters.
    """
    if not text:
        raise ValueError("text is empty; pass some text to look at")
    ids = tokenizer(text, return_tensors="pt").input_ids.to(next(model.parameters()).device)
    if layers is None:
        num_layers = model_parts(model).num_layers
        step = max(1, num_layers // 8)
        layers = sorted(set(range(0, num_layers, step)) | {num_layers})
    seq = ids.shape[1]
    out = apply_lens(model, ids, layers=layers, lens=lens, positions=range(max(0, seq - last_positions), seq))
    probs = torch.softmax(out.logits[0], dim=-1)  # [positions, layers, vocab]
    top_p, top_id = probs.max(dim=-1)
    header = ["layer".rjust(5)] + [
        readable_token(tokenizer, ids[0, p], width).rjust(width + 5) for p in out.positions
    ]
    lines = [" ".join(header), " ".join(["input".rjust(5)] + ["-" * (width + 5)] * len(out.positions))]
    for j, layer in reversed(list(enumerate(out.layers))):
        cells = [
            f"{readable_token(tokenizer, top_id[i, j], width)} {top_p[i, j]:.2f}".rjust(width + 5)
            for i in range(len(out.positions))
        ]
        lines.append(" ".join([str(layer).rjust(5)] + cells))
    return "\n".join(lines)
