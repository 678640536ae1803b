"""transformers 5 integration: ``model.generate(..., custom_generate=lenssample.hf.decoder(strategy))``.

transformers 5 accepts a callable as ``custom_generate``: it prepares the inputs, the logits processors (from the
generation config: temperature, top-p, repetition penalty, ...) and the stopping criteria (max length, EOS, stop
strings), then hands them to the callable instead of its own sampling loop. :func:`decoder` returns such a callable
that runs lenssample's loop, so everything ``model.generate`` is configured with is honoured::

    out = model.generate(input_ids, max_new_tokens=32, custom_generate=lenssample.hf.decoder(DoLa(layers="high")))

The tokens equal ``lenssample.generate(model, input_ids, strategy=..., ...)`` with the same settings. The per-step
trace is only available through :func:`lenssample.generate`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers.generation.utils import GenerateDecoderOnlyOutput

from lenssample.decoding.loop import Prompt, decode
from lenssample.decoding.sampling import TokenPicker
from lenssample.lens.base import Lens, as_lens
from lenssample.strategies.base import FinalLayer, Strategy


def decoder(
    strategy: Strategy | None = None, *, lens: Lens | None = None, schedule: Any = None
) -> Callable[..., Any]:
    """A ``custom_generate`` callable that decodes with ``strategy`` through ``lens`` (default: logit lens).

    ``schedule`` (``EarlyExit(...)``, ``SelfSpeculative(...)``) replaces the one-pass-per-token loop, as in
    :func:`lenssample.generate`.
    """
    if schedule is not None:
        from lenssample.decoding.schedule import Schedule

        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a lenssample schedule, got {type(schedule).__name__}")
    strategy = FinalLayer() if strategy is None else strategy
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a lenssample Strategy, got {type(strategy).__name__}")

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
        model_lens = as_lens(model, lens)
        strategy.check_model(model_lens.num_layers)
        attention_mask = model_kwargs.get("attention_mask")
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None
        max_new_tokens = int(generation_config.max_length) - input_ids.shape[1]
        eos = getattr(generation_config, "_eos_token_tensor", None)
        pad = getattr(generation_config, "_pad_token_tensor", None)
        if schedule is not None:
            schedule.check_model(model_lens.num_layers)
        run = decode if schedule is None else schedule.decode
        out = run(
            model,
            Prompt(input_ids=input_ids, attention_mask=attention_mask),
            strategy=strategy,
            lens=model_lens,
            picker=TokenPicker(processors=logits_processor, do_sample=bool(generation_config.do_sample)),
            max_new_tokens=max(max_new_tokens, 1),
            eos_token_ids=eos.reshape(-1).to(input_ids.device) if eos is not None else None,
            pad_token_id=int(pad) if pad is not None else None,
            stopping_criteria=stopping_criteria,
            streamer=streamer,
            use_cache=bool(model_kwargs.get("use_cache", True)),
        )
        if generation_config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(sequences=out.sequences)
        return out.sequences

    lenssample_decode.strategy = strategy  # type: ignore[attr-defined]
    return lenssample_decode
