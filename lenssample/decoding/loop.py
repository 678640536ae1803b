"""The per-token decoding loop: prefill, then one token at a time with the KV cache.

Each step runs the model once over the new token(s), reads the residual stream of exactly the layers the strategy
asks for (and runs no block beyond the deepest of them), projects them through the lens in one matrix product,
lets the strategy combine them, applies the logits processors and picks a token, which the emission policy
appends. Left-padded batches are handled with the attention mask and position ids computed the way
``model.generate`` computes them, so ``FinalLayer`` greedy decoding is token-identical to
``model.generate(do_sample=False)``.

The model step (model, capture, lens, strategy) comes in two kinds behind one interface (``first``/``next``): the
eager step on the model's dynamic KV cache, and with ``compile=True`` the compiled step on a static cache
(:mod:`lenssample.decoding.compiled`). Processors, token picking and emission are the same for both.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from lenssample.decoding.compiled import CompileUnavailable, compiled_step, lens_projection
from lenssample.decoding.emission import EmissionPolicy
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.prompt import Prompt
from lenssample.decoding.sampling import TokenPicker
from lenssample.decoding.settings import DecodingSettings
from lenssample.lens.base import Lens
from lenssample.model.capture import position_ids_from_mask, run_layers
from lenssample.strategies.base import Strategy, StrategyOutput


class _EagerSteps:
    """Steps on the model's dynamic KV cache (``use_cache=False``: the whole sequence again at every step)."""

    compile_seconds = None

    def __init__(self, model: nn.Module, strategy: Strategy, lens: Lens, layers: tuple[int, ...],
                 prompt: Prompt, use_cache: bool, lens_dtype: torch.dtype | None) -> None:  # fmt: skip
        self.model, self.strategy, self.lens, self.layers, self.use_cache = (
            model,
            strategy,
            lens,
            layers,
            use_cache,
        )
        self.attention_mask = prompt.attention_mask
        self.position_ids = (
            None if self.attention_mask is None else position_ids_from_mask(self.attention_mask)
        )
        self.cache = None
        self.projection = lens_projection(model, lens_dtype, prompt.input_ids.shape[0] * len(layers))

    def _run(self, step_ids: torch.Tensor) -> StrategyOutput:
        out = run_layers(
            self.model, step_ids, self.layers, attention_mask=self.attention_mask, position_ids=self.position_ids,
            cache=self.cache, use_cache=self.use_cache,
        )  # fmt: skip
        self.cache = out.cache
        # [batch, n_layers, vocab], checked for NaN and +inf by the strategy (so once per step, not twice)
        lens_logits = self.lens.project(out.hidden[:, -1], self.layers, projection=self.projection)
        return self.strategy(lens_logits, self.layers)

    def first(self, input_ids: torch.Tensor) -> StrategyOutput:
        return self._run(input_ids)

    def next(self, tokens: torch.Tensor, sequences: torch.Tensor) -> StrategyOutput:
        """``tokens: [batch]`` just emitted; ``sequences: [batch, seq]`` everything so far (tokens included)."""
        if self.attention_mask is not None:
            self.attention_mask = torch.cat(
                [self.attention_mask, self.attention_mask.new_ones(len(tokens), 1)], -1
            )
        if not self.use_cache:
            self.cache = None
            if self.position_ids is not None:
                self.position_ids = position_ids_from_mask(self.attention_mask)
            return self._run(sequences)
        if self.position_ids is not None:
            self.position_ids = self.position_ids[:, -1:] + 1
        return self._run(tokens[:, None])


class _StaticSteps:
    """Steps through a :class:`~lenssample.decoding.compiled.CompiledStep`: the attention mask has the static cache's
    length (zeros beyond the tokens so far, which causality masks anyway) and is updated in place."""

    def __init__(self, model: nn.Module, strategy: Strategy, lens: Lens, prompt: Prompt, max_new_tokens: int,
                 lens_dtype: torch.dtype | None) -> None:  # fmt: skip
        batch, length = prompt.input_ids.shape
        self.step = compiled_step(model, strategy, lens, batch, length + max_new_tokens, lens_dtype)
        prompt_mask = prompt.attention_mask
        if prompt_mask is None:
            prompt_mask = torch.ones_like(prompt.input_ids)
        self.mask = prompt_mask.new_zeros(batch, self.step.length)
        self.mask[:, :length] = prompt_mask
        self.positions = position_ids_from_mask(prompt_mask)
        self.length = length
        self.reused = self.step.compile_seconds is not None

    @property
    def compile_seconds(self) -> float | None:
        """The cold compile of this call; ``0.0`` when an earlier call's compiled step was reused."""
        return 0.0 if self.reused else self.step.compile_seconds

    def first(self, input_ids: torch.Tensor) -> StrategyOutput:
        return self.step.prefill(input_ids, self.mask, self.positions)

    def next(self, tokens: torch.Tensor, sequences: torch.Tensor) -> StrategyOutput:
        self.mask[:, self.length] = 1
        self.length += 1
        self.positions = self.positions[:, -1:] + 1
        return self.step.step(tokens[:, None], self.positions, self.mask)


def _check_finite(logits: torch.Tensor, strategy: Strategy) -> None:
    """NaN or ``+inf`` in a strategy's output (``-inf`` marks excluded tokens) would make every token equally
    wrong: refuse it, naming the strategy (one reduction per step)."""
    bad = torch.isnan(logits) | (logits == float("inf"))
    if bool(bad.any()):
        raise FloatingPointError(
            f"strategy {strategy.to_spec()!r} produced NaN or +inf logits; the model's computation overflowed "
            "(try float32) or its weights are damaged"
        )


@torch.inference_mode()
def decode(
    model: nn.Module,
    prompt: Prompt,
    *,
    strategy: Strategy,
    lens: Lens,
    picker: TokenPicker,
    policy: EmissionPolicy,
    settings: DecodingSettings | None = None,
) -> GenerateOutput:
    """The loop behind :func:`lenssample.generate` and the ``custom_generate`` path (inputs already validated).

    Args:
        model: the causal LM.
        prompt: validated prompt.
        strategy: which distribution to draw from; its layers are the only ones computed.
        lens: lens for those layers.
        picker: logits processors + greedy/sampling.
        policy: when rows stop, padding, streaming.
        settings: of the decoding settings the loop reads ``use_cache`` (``False`` recomputes the whole
            sequence every step; for testing), ``compile`` (the model step compiled on a static KV cache, see
            :mod:`lenssample.decoding.compiled`; where the architecture cannot use a static cache, the eager step runs
            instead, with a warning) and ``lens_dtype`` (precision of the lens projection; ``None``: the model's;
            strategies still combine float32 logits, and those for parity with a reference implementation,
            ``apply_final_norm=False``, always project in the model's precision). Default: ``DecodingSettings()``.
    """
    settings = settings or DecodingSettings()
    use_cache, lens_dtype = settings.use_cache, settings.lens_dtype
    layers = strategy.check_model(lens.num_layers)
    lens = lens.with_final_norm(strategy.apply_final_norm)
    projection_dtype = getattr(torch, lens_dtype) if lens_dtype and strategy.apply_final_norm else None
    input_ids = prompt.input_ids
    batch = input_ids.shape[0]
    emitter = policy.start(input_ids)
    steps: _EagerSteps | _StaticSteps | None = None
    decision = None
    if settings.compile:
        try:
            steps = _StaticSteps(model, strategy, lens, prompt, policy.max_new_tokens, projection_dtype)
            decision = steps.first(input_ids)
        except CompileUnavailable as error:
            warnings.warn(f"compile=True: {error}; decoding eagerly instead", RuntimeWarning, stacklevel=3)
            steps = None
    if steps is None:
        steps = _EagerSteps(model, strategy, lens, layers, prompt, use_cache, projection_dtype)
        decision = steps.first(input_ids)
    info_steps: dict[str, list[torch.Tensor]] = {}
    while True:
        _check_finite(decision.logits, strategy)
        next_tokens = picker.pick(picker.process(emitter.sequences, decision.logits))
        for key, value in decision.info.items():
            info_steps.setdefault(key, []).append(value.detach().reshape(batch).cpu())
        if emitter.emit(next_tokens):
            break
        decision = steps.next(next_tokens, emitter.sequences)
    trace = Trace(
        layers=layers,
        info={key: torch.stack(values, dim=1) for key, values in info_steps.items()},
        blocks_per_step=float(max(layers)),
        compile_seconds=steps.compile_seconds,
    )
    return GenerateOutput(
        sequences=emitter.sequences, prompt_length=input_ids.shape[1], trace=trace,
        attention_mask=prompt.attention_mask,
    )  # fmt: skip
