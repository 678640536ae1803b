"""Decoding settings: how tokens are picked and when a row stops, as one frozen dataclass.

The same settings object serves :func:`lenssample.generate`, the ``custom_generate`` decoder, the command line
(whose sampling flags are derived from these fields) and the evaluation harness. Everything is validated on
construction, before any model work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lenssample.validation import check_bool, check_choice, check_int, check_number, did_you_mean

DEFAULT_MAX_NEW_TOKENS = 32
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p")
LENS_DTYPES = ("float32", "bfloat16", "float16")


def _field(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, kw_only=True)
class DecodingSettings:
    """How a token is picked (greedy or sampled, after transformers' processors) and when a row stops."""

    max_new_tokens: int = _field(DEFAULT_MAX_NEW_TOKENS, "how many tokens to generate at most")
    do_sample: bool = _field(False, "sample instead of greedy decoding")
    temperature: float | None = _field(None, "sampling temperature (> 0)")
    top_k: int | None = _field(None, "sample from the k most likely tokens")
    top_p: float | None = _field(
        None, "nucleus sampling: the smallest set of tokens with this much probability"
    )
    min_p: float | None = _field(None, "drop tokens less likely than min_p times the top token")
    repetition_penalty: float | None = _field(None, "penalise tokens already in the sequence (1.0: none)")
    seed: int | None = _field(None, "seed a private random generator (reproducible sampling)")
    eos_token_id: int | tuple[int, ...] | None = _field(
        None, "ids that end a row (default: the model's generation config; an empty list: none)"
    )
    pad_token_id: int | None = _field(
        None, "fills finished rows (default: the model's, else the first EOS id)"
    )
    stop_strings: tuple[str, ...] | None = _field(None, "strings that end a row once generated")
    use_cache: bool = _field(True, "decode with a KV cache (false recomputes every position each step)")
    lens_dtype: str | None = field(
        default=None,
        metadata={
            "help": "precision of the lens projection: the model's own (default) or bfloat16/float16 (faster, "
            "approximate) or float32; transformers-parity strategies always use the model's",
            "choices": LENS_DTYPES,
        },
    )
    compile: bool = _field(
        False,
        "compile the per-token step with torch.compile on a static KV cache (the first call compiles for tens of "
        "seconds; later calls of the same shapes reuse it)",
    )

    def __post_init__(self) -> None:
        check_int(self.max_new_tokens, field="max_new_tokens", low=1)
        check_bool(self.do_sample, field="do_sample")
        check_bool(self.use_cache, field="use_cache")
        check_bool(self.compile, field="compile")
        if self.lens_dtype is not None:
            check_choice(self.lens_dtype, LENS_DTYPES, field="lens_dtype")
        if self.compile and not self.use_cache:
            raise ValueError(
                "compile=True decodes with a static KV cache; drop use_cache=False or compile=True"
            )
        if self.temperature is not None:
            check_number(self.temperature, field="temperature", low=1e-6, high=1e6,
                         fix="Use e.g. temperature=0.7; for greedy decoding do not sample.")  # fmt: skip
        if self.top_k is not None:
            check_int(self.top_k, field="top_k", low=1)
        if self.top_p is not None:
            check_number(self.top_p, field="top_p", low=0.0, high=1.0, low_open=True)
        if self.min_p is not None:
            check_number(self.min_p, field="min_p", low=0.0, high=1.0)
        if self.repetition_penalty is not None:
            check_number(self.repetition_penalty, field="repetition_penalty", low=0.0, low_open=True, high=1e3,
                         fix="1.0 means no penalty; DoLa's authors use 1.2.")  # fmt: skip
        if self.seed is not None:
            check_int(self.seed, field="seed", low=0)
            check_int(self.seed, field="seed", low=0, high=2**64 - 1, fix="torch seeds are 64-bit.")
        if self.pad_token_id is not None:
            check_int(self.pad_token_id, field="pad_token_id", low=0)
        if self.eos_token_id is not None:
            ids = (self.eos_token_id,) if not isinstance(self.eos_token_id, Sequence) else self.eos_token_id
            object.__setattr__(
                self, "eos_token_id", tuple(check_int(i, field="eos_token_id", low=0) for i in ids)
            )
        if self.stop_strings is not None:
            given = self.stop_strings
            strings = (given,) if isinstance(given, str) else tuple(given) if isinstance(given, Sequence) else ()
            if not strings or not all(isinstance(s, str) and s for s in strings):
                raise ValueError(f"stop_strings={self.stop_strings!r} must be one or more non-empty strings")
            object.__setattr__(self, "stop_strings", strings)
        if not self.do_sample:
            given = [n for n in SAMPLING_ONLY if getattr(self, n) is not None]
            given = [n for n in given if not (n == "temperature" and self.temperature == 1.0)]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply when sampling; pass do_sample=True (CLI: --sample) or drop them"
                )

    @classmethod
    def build(
        cls, settings: DecodingSettings | Mapping[str, Any] | None = None, **overrides: Any
    ) -> DecodingSettings:
        """Settings from a settings object or mapping, with some fields replaced; unknown names are refused."""
        base = dict(settings) if isinstance(settings, Mapping) else {}
        if settings is not None and not isinstance(settings, (DecodingSettings, Mapping)):
            raise TypeError(f"settings must be a DecodingSettings, got {type(settings).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in [*base, *overrides]:
            if key not in known:
                raise ValueError(
                    f"{key!r} is not a decoding setting.{did_you_mean(key, known)} Settings: {', '.join(known)}"
                )
        if isinstance(settings, DecodingSettings):
            return dataclasses.replace(settings, **overrides)
        return cls(**{**base, **overrides})

    def processors(self) -> LogitsProcessorList:
        """transformers' processors in ``model.generate``'s order; the warpers only when sampling."""
        processors = LogitsProcessorList()
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(self.repetition_penalty)))
        if not self.do_sample:
            return processors
        if self.temperature is not None and self.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k is not None:
            processors.append(TopKLogitsWarper(top_k=int(self.top_k), min_tokens_to_keep=1))
        if self.top_p is not None and self.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=float(self.top_p), min_tokens_to_keep=1))
        if self.min_p is not None and self.min_p > 0:
            processors.append(MinPLogitsWarper(min_p=float(self.min_p), min_tokens_to_keep=1))
        return processors

    def generator(self, device: torch.device) -> torch.Generator | None:
        """A private generator seeded with ``seed`` (``None`` without a seed: torch's global one)."""
        return None if self.seed is None else torch.Generator(device=device).manual_seed(int(self.seed))
