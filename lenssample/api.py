"""The drop-in decode functions: :func:`generate`, and :func:`decoder` for transformers 5's
``model.generate(..., custom_generate=decoder(strategy))``; both go through the one dispatch between the per-token
loop and a compute schedule (:func:`run_decoding`).

transformers 5 accepts a callable as ``custom_generate``: it prepares the inputs, the logits processors (from the
generation config: temperature, top-p, repetition penalty, ...) and the stopping criteria (max length, EOS, stop
strings), then hands them to the callable instead of its own sampling loop, so what ``model.generate`` is
configured with is honoured (its streamer too, see :func:`_streamer_of_calling_generate`), and the tokens equal
:func:`generate`'s with the same settings. ``stop_strings`` need ``model.generate(..., tokenizer=tok)`` there as
everywhere in transformers. The per-step trace is only available through :func:`generate`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from lenssample.decoding.emission import EmissionPolicy, stop_string_criteria
from lenssample.decoding.loop import decode
from lenssample.decoding.outputs import GenerateOutput
from lenssample.decoding.prompt import Prompt, prepare_prompt
from lenssample.decoding.sampling import TokenPicker
from lenssample.decoding.settings import DecodingSettings
from lenssample.lens.base import Lens
from lenssample.lens.tuned import load_lens
from lenssample.model.adapters import model_parts
from lenssample.schedules.base import Schedule, as_schedule, check_pair
from lenssample.strategies.base import Strategy, as_strategy
from lenssample.validation import check_callables, check_generator, check_int, check_length, check_token_ids


def resolve(
    model: nn.Module, strategy: Any, schedule: Any, lens: Any
) -> tuple[Strategy, Schedule | None, Lens]:
    """Strategy, schedule and lens objects from objects or specs, checked against the model and each other."""
    parts = model_parts(model)
    strategy, schedule = as_strategy(strategy), as_schedule(schedule)
    strategy.check_model(parts.num_layers)
    check_pair(strategy, schedule, parts.num_layers)
    return strategy, schedule, load_lens(lens, model)


def run_decoding(
    model: nn.Module,
    prompt: Prompt,
    *,
    strategy: Strategy,
    schedule: Schedule | None,
    lens: Lens,
    picker: TokenPicker,
    policy: EmissionPolicy,
    settings: DecodingSettings,
) -> GenerateOutput:
    """Run the per-token loop with ``strategy``, or ``schedule`` when there is one (inputs already validated; of
    ``settings`` the loop reads ``use_cache``, ``compile`` and ``lens_dtype``)."""
    picker.source = f"{'schedule' if schedule else 'strategy'} {(schedule or strategy).to_spec()!r}"
    if schedule is None:
        return decode(
            model, prompt, strategy=strategy, lens=lens, picker=picker, policy=policy, settings=settings
        )
    given = {"use_cache=False": not settings.use_cache, "compile=True": settings.compile,
             "lens_dtype": settings.lens_dtype}  # fmt: skip
    for flag in (flag for flag, value in given.items() if value):
        raise ValueError(
            f"schedule={schedule.to_spec()!r} runs its own loop and KV cache; drop {flag} (it applies to the "
            "per-token loop of strategies)"
        )
    return schedule.decode(model, prompt, lens=lens, picker=picker, policy=policy)


DOLA_REPETITION_PENALTY = 1.2


def warn_dola_repetition(strategy: Strategy, repetition_penalty: float | None) -> None:
    """DoLa's authors generate with a repetition penalty of 1.2 (transformers warned below it): say so when a DoLa
    strategy generates with less (scoring is not affected)."""
    if strategy.name.startswith("dola") and (repetition_penalty or 1.0) < DOLA_REPETITION_PENALTY:
        warnings.warn(
            f"strategy {strategy.to_spec()!r} generates with repetition_penalty={repetition_penalty or 1.0}; DoLa's "
            f"authors use {DOLA_REPETITION_PENALTY} for generation (without it DoLa tends to repeat itself): pass "
            f"repetition_penalty={DOLA_REPETITION_PENALTY} (CLI: --repetition-penalty {DOLA_REPETITION_PENALTY})",
            UserWarning,
            stacklevel=3,
        )


def _eos_ids(eos: int | Sequence[int] | None, device: torch.device) -> torch.Tensor | None:
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


def generate(
    model: nn.Module,
    inputs: torch.Tensor | str | Sequence[str],
    strategy: Strategy | str | None = None,
    *,
    schedule: Schedule | str | None = None,
    lens: Lens | str | None = None,
    tokenizer: Any = None,
    attention_mask: torch.Tensor | None = None,
    settings: DecodingSettings | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    streamer: Any = None,
    generator: torch.Generator | None = None,
    **setting_values: Any,
) -> GenerateOutput:
    """Generate with a lens-based strategy, or a compute schedule.

    Args:
        model: a supported Hugging Face causal LM (see :mod:`lenssample.model.adapters`).
        inputs: ``[batch, seq]`` token ids (left-padded, with ``attention_mask``), or a prompt string / list of
            strings (needs ``tokenizer``; batches are left-padded for you).
        strategy: which distribution to draw each token from: a strategy object or a spec
            (``"dola:layers=high"``); default ``FinalLayer``.
        schedule: a compute schedule that owns the loop instead of one pass per token, as an object or a spec:
            early exit (``"early-exit:measure=max-prob,threshold=0.9"``) or self-speculative decoding
            (``"speculative:draft_layer=24"``). It decodes from the final layer, so it replaces ``strategy``.
        lens: the lens intermediate layers are read through: a lens, ``"logit"`` (default) or a tuned-lens folder.
        tokenizer: needed for text prompts and ``stop_strings``.
        attention_mask: ``[batch, seq]`` 1 for tokens, 0 for left padding.
        settings: a :class:`~lenssample.decoding.settings.DecodingSettings`; keyword arguments named like its
            fields (``max_new_tokens``, ``do_sample``, ``temperature``, ``top_k``, ``top_p``, ``min_p``,
            ``repetition_penalty``, ``seed``, ``eos_token_id``, ``pad_token_id``, ``stop_strings``, ``use_cache``,
            ``compile``, ``lens_dtype``) set or replace them. ``compile=True`` runs the per-token step compiled on a static KV cache:
            the first call of a shape compiles (tens of seconds, ``out.trace.compile_seconds``), later ones reuse it.
        logits_processor: extra transformers processors, applied after the ones the settings build.
        stopping_criteria: extra transformers stopping criteria.
        streamer: a transformers streamer (``TextStreamer``, ``TextIteratorStreamer``); one prompt only.
        generator: a ``torch.Generator`` for sampling (exclusive with ``seed``); default torch's global RNG.

    Returns:
        :class:`~lenssample.decoding.outputs.GenerateOutput` with ``sequences`` and a per-step ``trace``.

    Example:
        >>> model, tok = lenssample.load_model()  # doctest: +SKIP
        >>> out = lenssample.generate(model, "The capital of France is", "dola:layers=high", tokenizer=tok)  # doctest: +SKIP
        >>> out.texts(tok)  # doctest: +SKIP
    """
    settings = DecodingSettings.build(settings, **setting_values)
    strategy, schedule, lens = resolve(model, strategy, schedule, lens)
    warn_dola_repetition(strategy, settings.repetition_penalty)
    for field in ("eos_token_id", "pad_token_id"):  # a pad id outside the vocabulary would reach the output
        value, top = getattr(settings, field), lens.vocab_size - 1
        for token in () if value is None else value if isinstance(value, tuple) else (value,):
            check_int(token, field=field, low=0, high=top, fix="Use a token id of this model.")
    if settings.seed is not None and generator is not None:
        raise ValueError("pass either seed= or generator=, not both")
    logits_processor = check_callables(logits_processor, field="logits_processor", example="a LogitsProcessor")
    stopping_criteria = check_callables(stopping_criteria, field="stopping_criteria", example="a StoppingCriteria")
    prompt = prepare_prompt(
        model, inputs, attention_mask=attention_mask, tokenizer=tokenizer, vocab_size=lens.vocab_size
    )
    check_length(model, prompt.input_ids.shape[1], settings.max_new_tokens)
    generator = check_generator(generator, prompt.input_ids.device)
    if streamer is not None and prompt.input_ids.shape[0] > 1:
        raise ValueError(
            f"streamer= prints one sequence, but the prompt has {prompt.input_ids.shape[0]} rows; stream one "
            "prompt at a time or drop streamer="
        )
    device = prompt.input_ids.device
    processors = settings.processors()
    processors.extend(logits_processor)
    criteria = StoppingCriteriaList(stopping_criteria)
    if settings.stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings needs tokenizer=...; pass the model's tokenizer")
        criteria.append(stop_string_criteria(tokenizer, list(settings.stop_strings)))
    config = getattr(model, "generation_config", None)
    eos = (
        settings.eos_token_id if settings.eos_token_id is not None else getattr(config, "eos_token_id", None)
    )
    eos_ids = _eos_ids(eos, device)
    pad = (
        settings.pad_token_id if settings.pad_token_id is not None else getattr(config, "pad_token_id", None)
    )
    if pad is None:
        pad = int(eos_ids[0]) if eos_ids is not None else 0
    policy = EmissionPolicy(
        max_new_tokens=settings.max_new_tokens, eos_token_ids=eos_ids, pad_token_id=int(pad),
        stopping_criteria=criteria, streamer=streamer,
    )  # fmt: skip
    picker = TokenPicker(
        processors, do_sample=settings.do_sample, generator=settings.generator(device) or generator
    )
    return run_decoding(
        model, prompt, strategy=strategy, schedule=schedule, lens=lens, picker=picker, policy=policy,
        settings=settings,
    )  # fmt: skip


@functools.cache
def _generate_code() -> Any:
    from transformers.generation.utils import GenerationMixin

    return inspect.unwrap(GenerationMixin.generate).__code__


def _streamer_of_calling_generate(max_depth: int = 8) -> Any:
    """The ``streamer`` argument of the ``GenerationMixin.generate`` call running this decoder, or ``None``.

    transformers 5 rebuilds the keyword arguments it gives a callable ``custom_generate`` without ``streamer`` (a
    named parameter of its own sampling loop), after putting the prompt into it; the streamer is still a local of
    the ``generate`` frame that called us (found by its code object, so subclasses and decorators do not matter).
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        if frame.f_code is _generate_code():
            return frame.f_locals.get("streamer")
        frame = frame.f_back
    return None


class _PromptAlreadyPut:
    """Forwards to a streamer, dropping the first ``put`` (the prompt, which ``generate`` already put)."""

    def __init__(self, streamer: Any) -> None:
        self.streamer, self.skipped = streamer, False

    @classmethod
    def wrap(cls, streamer: Any) -> Any:
        return None if streamer is None else cls(streamer)

    def put(self, value: torch.Tensor) -> None:
        if self.skipped:
            self.streamer.put(value)
        self.skipped = True

    def end(self) -> None:
        self.streamer.end()


def _check_generation_config(generation_config: Any) -> None:
    """Refuse what the decoder cannot do (beam search) and say what it does not return, instead of silently
    giving something else (transformers expands the prompt ``num_beams`` times before calling the decoder)."""
    beams = getattr(generation_config, "num_beams", 1) or 1
    if beams > 1:
        raise ValueError(
            f"num_beams={beams}: lenssample's decoder picks one token per step from its strategy (greedy, or "
            "sampling with do_sample=True); beam search is not supported: drop num_beams"
        )
    if generation_config.return_dict_in_generate:
        asked = [name for name in ("output_scores", "output_logits", "output_attentions", "output_hidden_states")
                 if getattr(generation_config, name, False)]  # fmt: skip
        if asked:
            warnings.warn(
                f"{', '.join(asked)}: lenssample's decoder returns the sequences only (lenssample.generate's output "
                "has a per-step trace; lenssample.score gives per-token log-probabilities)",
                stacklevel=3,
            )


def decoder(
    strategy: Strategy | str | None = None,
    *,
    lens: Lens | str | None = None,
    schedule: Schedule | str | None = None,
    compile: bool = False,
    lens_dtype: str | None = None,
) -> Callable[..., Any]:
    """A ``custom_generate`` callable that decodes with ``strategy`` (or ``schedule``) through ``lens``.

    Strategy, schedule and lens take objects or specs, as in :func:`lenssample.generate`; a schedule combined with
    a strategy other than the final layer is refused here, before any model runs. ``compile=True``: the compiled
    step, ``lens_dtype``: the lens projection's precision (see :func:`lenssample.generate`).
    """
    strategy, schedule = as_strategy(strategy), as_schedule(schedule)
    check_pair(strategy, schedule)
    options = DecodingSettings(
        compile=compile, lens_dtype=lens_dtype
    )  # validated here, before any model runs
    if (compile or lens_dtype) and schedule is not None:
        raise ValueError(f"schedule={schedule.to_spec()!r} runs its own loop; drop compile= and lens_dtype=")

    def lenssample_decode(
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        logits_processor: Any,
        stopping_criteria: Any,
        generation_config: Any,
        synced_gpus: bool = False,
        streamer: Any = None,
        **model_kwargs: Any,
    ) -> torch.Tensor | GenerateDecoderOnlyOutput:
        chosen, plan, model_lens = resolve(model, strategy, schedule, lens)
        check_token_ids(input_ids, model_lens.vocab_size)
        _check_generation_config(generation_config)
        warn_dola_repetition(chosen, getattr(generation_config, "repetition_penalty", None))
        if streamer is None:
            # transformers 5 keeps generate(streamer=...) from a callable: find it (the prompt is already put).
            streamer = _PromptAlreadyPut.wrap(_streamer_of_calling_generate())
        if streamer is not None and input_ids.shape[0] > 1:
            raise ValueError(
                f"streamer: streaming takes one prompt at a time, got a batch of {input_ids.shape[0]}; "
                "generate the prompts one by one or drop streamer="
            )
        attention_mask = model_kwargs.get("attention_mask")
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None
        max_new_tokens = max(int(generation_config.max_length) - input_ids.shape[1], 1)
        check_length(model, input_ids.shape[1], max_new_tokens)
        eos = getattr(generation_config, "_eos_token_tensor", None)
        pad = getattr(generation_config, "_pad_token_tensor", None)
        eos_ids = eos.reshape(-1).to(input_ids.device) if eos is not None else None
        policy = EmissionPolicy(
            max_new_tokens=max_new_tokens,
            eos_token_ids=eos_ids,
            pad_token_id=int(pad) if pad is not None else (int(eos_ids[0]) if eos_ids is not None else 0),
            stopping_criteria=stopping_criteria,
            streamer=streamer,
        )
        out = run_decoding(
            model,
            Prompt(input_ids=input_ids, attention_mask=attention_mask),
            strategy=chosen,
            schedule=plan,
            lens=model_lens,
            picker=TokenPicker(processors=logits_processor, do_sample=bool(generation_config.do_sample)),
            policy=policy,
            settings=dataclasses.replace(options, use_cache=bool(model_kwargs.get("use_cache", True))),
        )
        if generation_config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(sequences=out.sequences)
        return out.sequences

    lenssample_decode.strategy = strategy  # type: ignore[attr-defined]
    lenssample_decode.schedule = schedule  # type: ignore[attr-defined]
    lenssample_decode.compile = compile  # type: ignore[attr-defined]
    return lenssample_decode
