"""The per-token decoding loop: prefill, then one token at a time with the KV cache.

Each step runs the model once over the new token(s), reads the residual stream of exactly the layers the strategy
asks for (and runs no block beyond the deepest of them), projects them through the lens in one matrix product,
lets the strategy combine them, applies the logits processors and picks a token, which the emission policy
appends. Left-padded batches are handled with the attention mask and position ids computed the way
``model.generate`` computes them, so ``FinalLayer`` greedy decoding is token-identical to
``model.generate(do_sample=False)``.
"""

from __future__ import annotations

import torch
from torch import nn

from lenssample.decoding.emission import EmissionPolicy
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.prompt import Prompt
from lenssample.decoding.sampling import TokenPicker
from lenssample.lens.base import Lens
from lenssample.model.capture import position_ids_from_mask, run_layers
from lenssample.strategies.base import Strategy


@torch.inference_mode()
def decode(
    model: nn.Module,
    prompt: Prompt,
    *,
    strategy: Strategy,
    lens: Lens,
    picker: TokenPicker,
    policy: EmissionPolicy,
    use_cache: bool = True,
) -> GenerateOutput:
    """The loop behind :func:`lenssample.generate` and the ``custom_generate`` path (inputs already validated).

    Args:
        model: the causal LM.
        prompt: validated prompt.
        strategy: which distribution to draw from; its layers are the only ones computed.
        lens: lens for those layers.
        picker: logits processors + greedy/sampling.
        policy: when rows stop, padding, streaming.
        use_cache: keep a KV cache (``False`` recomputes the whole sequence every step; for testing).
    """
    layers = strategy.check_model(lens.num_layers)
    lens = lens.with_final_norm(strategy.apply_final_norm)
    input_ids, attention_mask = prompt.input_ids, prompt.attention_mask
    batch = input_ids.shape[0]
    emitter = policy.start(input_ids)
    info_steps: dict[str, list[torch.Tensor]] = {}
    cache, step_ids = None, input_ids
    position_ids = position_ids_from_mask(attention_mask) if attention_mask is not None else None
    while not emitter.done:
        if not use_cache:  # rerun the whole sequence
            step_ids, cache = emitter.sequences, None
        out = run_layers(
            model, step_ids, layers, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
            use_cache=use_cache,
        )  # fmt: skip
        cache = out.cache
        decision = strategy(lens(out.hidden[:, -1], layers), layers)  # lens: [batch, n_layers, vocab]
        next_tokens = picker.pick(picker.process(emitter.sequences, decision.logits))
        for key, value in decision.info.items():
            info_steps.setdefault(key, []).append(value.detach().reshape(batch).cpu())
        if emitter.emit(next_tokens):
            break
        # Inputs of the next step.
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=-1)
        step_ids = next_tokens[:, None]
        if position_ids is not None:
            position_ids = position_ids[:, -1:] + 1 if use_cache else position_ids_from_mask(attention_mask)
    trace = Trace(
        layers=layers,
        info={key: torch.stack(values, dim=1) for key, values in info_steps.items()},
        blocks_per_step=float(max(layers)),
    )
    return GenerateOutput(
        sequences=emitter.sequences, prompt_length=input_ids.shape[1], trace=trace,
        attention_mask=prompt.attention_mask,
    )  # fmt: skip
