"""``lenssample.generate``: the drop-in decode function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteriaList, StopStringCriteria

from lenssample.adapters import model_parts
from lenssample.decoding.loop import decode, prepare_prompt
from lenssample.decoding.outputs import GenerateOutput
from lenssample.decoding.sampling import TokenPicker, build_processors
from lenssample.decoding.schedule import Schedule, check_schedule
from lenssample.lens.base import Lens, as_lens
from lenssample.strategies.base import FinalLayer, Strategy


def eos_ids_tensor(eos_token_id: int | Sequence[int] | None, device: torch.device) -> torch.Tensor | None:
    """Normalise one or several EOS ids to a ``[n_eos]`` tensor (``None`` when there are none)."""
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids:
        return None
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"eos_token_id contains {value!r}; pass token ids (non-negative integers)")
    return torch.tensor(ids, dtype=torch.long, device=device)


def generate(
    model: nn.Module,
    inputs: torch.Tensor | str | Sequence[str],
    *,
    strategy: Strategy | None = None,
    lens: Lens | None = None,
    tokenizer: Any = None,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop_strings: str | Sequence[str] | None = None,
    streamer: Any = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    schedule: Schedule | None = None,
) -> GenerateOutput:
    """Generate with a lens-based strategy.

    Args:
        model: a supported Hugging Face causal LM (see :mod:`lenssample.adapters`).
        inputs: ``[batch, seq]`` token ids (left-padded, with ``attention_mask``), or a prompt string / list of
            strings (needs ``tokenizer``; batches are left-padded for you).
        strategy: which distribution to draw each token from; default :class:`~lenssample.FinalLayer`.
        lens: the lens the strategy reads through; default the logit lens.
        tokenizer: needed for text prompts and ``stop_strings``.
        attention_mask: ``[batch, seq]`` 1 for tokens, 0 for left padding.
        max_new_tokens: how many tokens to generate at most (>= 1).
        do_sample: sample instead of greedy decoding.
        temperature, top_k, top_p, min_p, repetition_penalty: transformers' processors (the warpers only when
            sampling; the repetition penalty in both cases).
        logits_processor: extra transformers processors, applied after the ones above.
        stopping_criteria: extra transformers stopping criteria.
        eos_token_id: one or several ids that end a row; default the model's ``generation_config``.
        pad_token_id: fills finished rows; default the model's, else the first EOS id.
        stop_strings: strings that end a row once generated (transformers' ``StopStringCriteria``).
        streamer: a transformers streamer (``TextStreamer``, ``TextIteratorStreamer``).
        seed: seed a private ``torch.Generator`` for reproducible sampling.
        generator: a ``torch.Generator`` for sampling (exclusive with ``seed``); default torch's global RNG.
        use_cache: decode with a KV cache (``False`` recomputes everything each step).
        schedule: a compute schedule that owns the loop instead of one pass per token: early exit
            (:class:`~lenssample.strategies.early_exit.EarlyExit`) or self-speculative decoding
            (:class:`~lenssample.decoding.speculative.SelfSpeculative`). It replaces ``strategy`` (leave that unset);
            ``lens`` is the lens it reads intermediate layers through.

    Returns:
        :class:`~lenssample.decoding.outputs.GenerateOutput` with ``sequences`` and a per-step ``trace``.

    Example:
        >>> model, tok = lenssample.load_model()  # doctest: +SKIP
        >>> out = lenssample.generate(model, "The capital of France is", tokenizer=tok, max_new_tokens=8)  # doctest: +SKIP
        >>> out.texts(tok)  # doctest: +SKIP
    """
    parts = model_parts(model)
    if schedule is not None:
        check_schedule(schedule, strategy, parts.num_layers)
    strategy = FinalLayer() if strategy is None else strategy
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy must be a lenssample Strategy (e.g. lenssample.FinalLayer()), got {type(strategy).__name__}; "
            "build one by name with lenssample.strategy_from_name(...)"
        )
    lens = as_lens(model, lens)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
    strategy.check_model(parts.num_layers)
    prompt = prepare_prompt(
        model, inputs, attention_mask=attention_mask, tokenizer=tokenizer, vocab_size=parts.vocab_size
    )
    device = prompt.input_ids.device
    if seed is not None and generator is not None:
        raise ValueError("pass either seed= or generator=, not both")
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    processors = build_processors(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
    )
    if logits_processor:
        processors.extend(logits_processor)
    criteria = StoppingCriteriaList(stopping_criteria or [])
    if stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings needs tokenizer=...; pass the model's tokenizer")
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
    gen_config = getattr(model, "generation_config", None)
    if eos_token_id is None and gen_config is not None:
        eos_token_id = gen_config.eos_token_id
    if pad_token_id is None and gen_config is not None:
        pad_token_id = gen_config.pad_token_id
    # The per-token loop and a compute schedule take the same decoding settings.
    settings = dict(
        lens=lens,
        picker=TokenPicker(processors=processors, do_sample=do_sample, generator=generator),
        max_new_tokens=max_new_tokens,
        eos_token_ids=eos_ids_tensor(eos_token_id, device),
        pad_token_id=pad_token_id,
        stopping_criteria=criteria,
        streamer=streamer,
    )
    if schedule is not None:
        return schedule.decode(model, prompt, **settings)
    return decode(model, prompt, strategy=strategy, use_cache=use_cache, **settings)
