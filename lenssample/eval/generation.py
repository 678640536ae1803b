"""Generation tasks: open questions with reference answers, and quality statistics of free generations.

Answer matching uses SQuAD-style normalisation (lower case, no punctuation, no articles ``a/an/the``, single
spaces): ``exact_match`` when the normalised answer equals a normalised reference, ``contains`` when a normalised
reference occurs (as whole words) in the normalised answer.

Quality statistics of generated token sequences:

- ``repetition_rate``: per sequence, the fraction of its n-grams (``n=4`` by default) that already occurred
  earlier in it, i.e. ``1 - unique / total`` (Welleck et al. 2019's seq-rep-n), averaged over sequences.
- ``distinct_n``: unique n-grams / total n-grams, pooled over all sequences (Li et al. 2016), for ``n = 1, 2``.
- ``mean_length``: mean number of generated tokens.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lenssample.api import generate
from lenssample.data.sets import GenerationItem
from lenssample.data.windows import leading_token_ids
from lenssample.lens.base import Lens
from lenssample.schedules.base import Schedule
from lenssample.strategies.base import Strategy
from lenssample.validation import check_tokenizer

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, strip punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(answer: str, references: Sequence[str]) -> float:
    """1.0 when the normalised answer equals one of the normalised references."""
    norm = normalize_answer(answer)
    return float(any(norm == normalize_answer(ref) for ref in references))


def contains_answer(answer: str, references: Sequence[str]) -> float:
    """1.0 when a normalised (non-empty) reference occurs as whole words in the normalised answer."""
    padded = f" {normalize_answer(answer)} "
    return float(any(ref and f" {ref} " in padded for ref in map(normalize_answer, references)))


def _ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repetition_rate(tokens: Sequence[int], n: int = 4) -> float:
    """Fraction of the n-grams of one sequence that repeat an earlier one (0 when it has no n-gram)."""
    grams = _ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(sequences: Sequence[Sequence[int]], n: int) -> float:
    """Unique n-grams over total n-grams, pooled over sequences (0 when there is none)."""
    grams = [g for seq in sequences for g in _ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def quality_stats(sequences: Sequence[Sequence[int]], n: int = 4) -> dict[str, float]:
    """``repetition_rate``, ``distinct_1``, ``distinct_2`` and ``mean_length`` of generated token sequences."""
    if not sequences:
        raise ValueError("quality_stats needs at least one generated sequence")
    return {
        "repetition_rate": sum(repetition_rate(s, n) for s in sequences) / len(sequences),
        "distinct_1": distinct_n(sequences, 1),
        "distinct_2": distinct_n(sequences, 2),
        "mean_length": sum(len(s) for s in sequences) / len(sequences),
    }


def first_line(text: str) -> str:
    """The answer part of a generation: its first non-empty line."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def evaluate_item(
    model: nn.Module,
    tokenizer: Any,
    item: GenerationItem,
    strategy: Strategy,
    *,
    schedule: Schedule | None = None,
    lens: Lens | None = None,
    max_new_tokens: int = 32,
    stop_at_newline: bool = True,
    repetition_penalty: float | None = None,
) -> dict[str, Any]:
    """Greedy generation for one item with a strategy or a schedule: a JSON-ready record with the text, the
    generated token ids, and ``exact_match`` / ``contains`` when the item has references."""
    check_tokenizer(model, tokenizer)
    prompt_ids = tokenizer.encode(item.prompt, add_special_tokens=False)
    ids = torch.tensor([leading_token_ids(tokenizer) + prompt_ids if prompt_ids else []], dtype=torch.long)
    if ids.shape[1] == 0:
        raise ValueError(f"item {item.id!r} has an empty prompt")
    out = generate(model, ids, strategy, schedule=schedule, lens=lens, max_new_tokens=max_new_tokens,
                   repetition_penalty=repetition_penalty)  # fmt: skip
    new = out.new_tokens[0].tolist()
    # a finished row is padded after its EOS: keep the tokens before the first EOS
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
    new = next((new[:i] for i, token in enumerate(new) if token in eos_ids), new)
    text = tokenizer.decode(new, skip_special_tokens=True)
    answer = first_line(text) if stop_at_newline else text.strip()
    record: dict[str, Any] = {"text": text, "tokens": new, "length": len(new), "answer": answer}
    if item.references:
        record.update(
            exact_match=exact_match(answer, item.references),
            contains=contains_answer(answer, item.references),
        )
    return {**record, "repetition_rate": repetition_rate(new)}
