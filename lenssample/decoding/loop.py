"""The decoding loop: prefill, then one token at a time with the KV cache.

Each step runs the model once over the new token(s), reads the residual stream of exactly the layers the strategy
asks for (and runs no block beyond the deepest of them), projects them through the lens in one matrix product,
lets the strategy combine them, applies the logits processors and picks a token. Left-padded batches are handled
with the attention mask and position ids computed the way ``model.generate`` computes them, so ``FinalLayer``
greedy decoding is token-identical to ``model.generate(do_sample=False)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteriaList

from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.sampling import TokenPicker
from lenssample.lens.base import Lens
from lenssample.lens.capture import run_layers
from lenssample.strategies.base import Strategy


@dataclass
class Prompt:
    """Validated model inputs.

    Attributes:
        input_ids: ``[batch, seq]`` left-padded token ids.
        attention_mask: ``[batch, seq]``, or ``None`` when there is no padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None


def prepare_prompt(
    model: nn.Module,
    inputs: torch.Tensor | str | Sequence[str],
    *,
    attention_mask: torch.Tensor | None,
    tokenizer: Any,
    vocab_size: int,
) -> Prompt:
    """Tokenize (strings) or validate (tensors) the prompt at the API boundary."""
    device = next(model.parameters()).device
    if isinstance(inputs, str) or (
        isinstance(inputs, Sequence)
        and not isinstance(inputs, torch.Tensor)
        and inputs
        and isinstance(inputs[0], str)
    ):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if tokenizer is None:
            raise ValueError(
                "a text prompt needs tokenizer=...; pass the tokenizer from lenssample.load_model"
            )
        if any(not t for t in texts):
            raise ValueError("prompt is empty; pass at least one character of text")
        if len(tokenizer) > vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab_size}: they do not "
                "belong together; load both with lenssample.load_model(...)"
            )
        old_side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            encoded = tokenizer(texts, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = old_side
        input_ids = encoded["input_ids"].to(device)
        attention_mask = encoded["attention_mask"].to(device)
    elif isinstance(inputs, torch.Tensor):
        input_ids = inputs.to(device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if input_ids.dtype not in (torch.long, torch.int32, torch.int64):
            raise ValueError(f"input_ids has dtype {input_ids.dtype}; pass integer token ids (torch.long)")
        input_ids = input_ids.long()
        if input_ids.dim() != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(
                f"input_ids has shape {tuple(inputs.shape)}; the prompt is empty. Pass [batch, seq] ids with seq >= 1"
            )
        if (input_ids < 0).any() or (input_ids >= vocab_size).any():
            bad = input_ids[(input_ids < 0) | (input_ids >= vocab_size)][0].item()
            raise ValueError(
                f"input_ids contains token id {bad}, outside the model's vocabulary 0..{vocab_size - 1}; "
                "tokenize with this model's tokenizer"
            )
        if attention_mask is not None:
            attention_mask = attention_mask.to(device)
            if attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                    f"{tuple(input_ids.shape)}; pass a [batch, seq] mask of 1 (token) / 0 (left padding)"
                )
            if (attention_mask.sum(-1) == 0).any():
                raise ValueError(
                    "attention_mask has a row of zeros (an empty prompt); give every row a token"
                )
    else:
        raise TypeError(
            f"inputs must be a LongTensor of token ids, a string or a list of strings, got {type(inputs).__name__}"
        )
    if attention_mask is not None and bool((attention_mask == 1).all()):
        attention_mask = (
            None  # no padding: let the model take its fast, mask-free path (as model.generate does)
        )
    return Prompt(input_ids=input_ids, attention_mask=attention_mask)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``model.generate`` computes them: ``[batch, seq]``."""
    position_ids = attention_mask.long().cumsum(-1) - 1
    return position_ids.masked_fill(attention_mask == 0, 0)


def decode(
    model: nn.Module,
    prompt: Prompt,
    *,
    strategy: Strategy,
    lens: Lens,
    picker: TokenPicker,
    max_new_tokens: int,
    eos_token_ids: torch.Tensor | None,
    pad_token_id: int | None,
    stopping_criteria: StoppingCriteriaList | None = None,
    streamer: Any = None,
    use_cache: bool = True,
) -> GenerateOutput:
    """The loop behind :func:`lenssample.generate` and the ``custom_generate`` path (inputs already validated).

    Args:
        model: the causal LM.
        prompt: validated prompt.
        strategy: which distribution to draw from; its layers are the only ones computed.
        lens: lens for those layers.
        picker: logits processors + greedy/sampling.
        max_new_tokens: upper bound on generated tokens.
        eos_token_ids: ``[n_eos]`` ids that finish a row, or ``None``.
        pad_token_id: id written into finished rows (required when ``eos_token_ids`` is given).
        stopping_criteria: transformers criteria, called as ``criteria(sequences, None) -> [batch] bool``.
        streamer: a transformers streamer (``put``/``end``).
        use_cache: keep a KV cache (``False`` recomputes the whole sequence every step; for testing).
    """
    layers = strategy.check_model(lens.num_layers)
    lens = lens.with_final_norm(strategy.apply_final_norm)
    input_ids, attention_mask = prompt.input_ids, prompt.attention_mask
    batch = input_ids.shape[0]
    if eos_token_ids is not None and pad_token_id is None:
        pad_token_id = int(eos_token_ids[0])
    sequences = input_ids
    prompt_length = input_ids.shape[1]
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    info_steps: dict[str, list[torch.Tensor]] = {}
    if streamer is not None:
        streamer.put(input_ids.cpu())

    cache = None
    step_ids = input_ids
    position_ids = position_ids_from_mask(attention_mask) if attention_mask is not None else None
    steps = 0
    with torch.inference_mode():
        while steps < max_new_tokens:
            if use_cache or steps == 0:
                out = run_layers(
                    model,
                    step_ids,
                    layers,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=use_cache,
                )
            else:  # uncached: rerun the whole sequence
                out = run_layers(
                    model, sequences, layers, attention_mask=attention_mask, position_ids=position_ids,
                    use_cache=False,
                )  # fmt: skip
            cache = out.cache
            lens_logits = lens(out.hidden[:, -1], layers)  # [batch, n_layers, vocab]
            decision = strategy(lens_logits, layers)
            processed = picker.process(sequences, decision.logits)
            next_tokens = picker.pick(processed)
            if eos_token_ids is not None:
                next_tokens = torch.where(unfinished, next_tokens, torch.full_like(next_tokens, pad_token_id))
            sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
            for key, value in decision.info.items():
                info_steps.setdefault(key, []).append(value.detach().reshape(batch).cpu())
            steps += 1
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if eos_token_ids is not None:
                unfinished &= ~torch.isin(next_tokens, eos_token_ids)
            if stopping_criteria:
                unfinished &= ~stopping_criteria(sequences, None).to(unfinished.device)
            if not bool(unfinished.any()):
                break
            # Inputs of the next step.
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=-1)
            if use_cache:
                step_ids = next_tokens[:, None]
                if position_ids is not None:
                    position_ids = position_ids[:, -1:] + 1
            elif position_ids is not None:
                position_ids = position_ids_from_mask(attention_mask)
    if streamer is not None:
        streamer.end()
    trace = Trace(
        layers=layers,
        info={key: torch.stack(values, dim=1) for key, values in info_steps.items()},
        blocks_per_step=float(max(layers)),
    )
    return GenerateOutput(
        sequences=sequences,
        prompt_length=prompt_length,
        trace=trace,
        attention_mask=prompt.attention_mask,
    )
