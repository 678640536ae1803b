"""The compiled decode step (``compile=True``): a static KV cache and one ``torch.compile`` d graph per token.

What is compiled is everything from the new token to the strategy's decision: the blocks up to the deepest layer
read, the capture of those layers, the lens projection and the strategy's combination. The logits processors,
token picking and emission stay in the one decoding loop (:mod:`lenssample.decoding.loop`), outside the graph.

How the layers are captured without hooks (which a compiled graph cannot register per call): a *tapped view* of
the base model, a shallow copy whose block list holds the first ``depth`` blocks wrapped in :class:`_Tap` modules
that record their outputs. The model's own ``forward`` runs (masks, rotary embeddings and sliding windows stay the
model's business) and the user's model object is never modified.

Shapes are static: the cache holds ``bucket(prompt + max_new_tokens)`` positions (a multiple of
:data:`LENGTH_BUCKET`) and the attention mask that long, so one compiled step serves every call with the same
(model, strategy, lens, batch size, bucket, dtype); it is kept on the model and reused. The prefill runs the same
view eagerly (prompt lengths vary). On CPU the weights are frozen into the graph as constants and its matrix
products autotuned (:func:`inductor_options`): the step captures the weights (and a tuned lens's) when it compiles,
so it is rebuilt when any of them has changed since (a parameter's version counter or storage).

Where compiling fails (no C compiler, an operation inductor cannot lower) the step runs eagerly on the same static
cache, with one warning; where the static cache itself does not work for the architecture, the caller falls back to
the dynamic-cache loop (:class:`CompileUnavailable`).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lenssample.lens.base import Lens
from lenssample.lens.passes import release_freed_heap
from lenssample.model.adapters import ModelParts, model_parts
from lenssample.model.surgery import _blocks_attr as blocks_attr
from lenssample.strategies.base import Strategy, StrategyOutput

LENGTH_BUCKET = 128
RECOMPILE_LIMIT = 64  # compiled steps (strategy, lens, batch, bucket...) one process may hold


class CompileUnavailable(RuntimeError):
    """The static-cache step cannot run for this model (the caller decodes eagerly instead)."""


class _Recorder:
    def __init__(self) -> None:
        self.hidden: list[torch.Tensor] = []


class _Tap(nn.Module):
    """Runs a block and records its output (and, for block 0 when layer 0 is read, its input)."""

    def __init__(self, block: nn.Module, recorder: _Recorder, *, output: bool, input: bool) -> None:
        super().__init__()
        self.block = block
        self.__dict__["recorder"] = recorder
        self.record_output, self.record_input = output, input

    def __getattr__(
        self, name: str
    ) -> Any:  # attributes model forwards read from blocks (e.g. attention_type)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.record_input:
            self.recorder.hidden.append(hidden_states)
        out = self.block(hidden_states, *args, **kwargs)
        if self.record_output:
            self.recorder.hidden.append(out[0] if isinstance(out, tuple) else out)
        return out


class _RowLinear(nn.Module):
    """``nn.Linear`` from a faster weight layout for a few rows on CPU: ``x @ W_t`` with a transposed copy (one row)
    or ``(W @ x.T).T`` (several rows), optionally in a lower precision (``dtype``: a converted copy of the weight).
    Parameters are shared with the model where no copy is needed; a copy is made once."""

    def __init__(
        self, linear: nn.Linear, transposed: dict[int, torch.Tensor] | None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        weight = linear.weight.detach()
        weight = weight if dtype is None else weight.to(dtype)
        self.weight_t = None
        if transposed is not None:
            key = id(linear.weight)
            if key not in transposed:
                transposed[key] = weight.t().contiguous()
            self.weight_t = transposed[key]
        self.weight = weight
        self.bias = None if linear.bias is None else linear.bias.detach().to(weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.dtype)
        if self.weight_t is not None:
            out = x @ self.weight_t
        else:
            flat = x.reshape(-1, x.shape[-1])
            out = (self.weight @ flat.t()).t().reshape(*x.shape[:-1], self.weight.shape[0])
        return out if self.bias is None else out + self.bias


def lens_projection(model: nn.Module, dtype: torch.dtype | None, rows: int) -> nn.Module | None:
    """The unembedding in ``dtype`` for ``rows`` rows per step (kept on the model), or ``None`` for the model's own
    (``dtype`` ``None`` or the model's dtype)."""
    parts = model_parts(model)
    if dtype is None or dtype == parts.unembed.weight.dtype or type(parts.unembed) is not nn.Linear:
        return None
    key = (dtype, rows == 1, parts.unembed.weight.data_ptr())
    cached = model.__dict__.setdefault("_lenssample_lens_projections", {})
    if key not in cached:
        cached.clear()  # one precision in use at a time: do not keep copies of the unembedding around
        cached[key] = _RowLinear(parts.unembed, {} if rows == 1 else None, dtype)
    return cached[key]


def inductor_options(device: torch.device) -> dict[str, Any] | None:
    """Inductor settings for the step on ``device``: on CPU, weights frozen into the graph as constants and GEMMs
    autotuned between inductor's C++ template (weights packed once, at compile time) and ATen's. Measured on the
    default model (2-core AVX2 CPU, 128 tokens, final layer): 26-29 ms/token against 58-60 ms/token with the
    defaults; either setting alone gains nothing (the C++ template needs frozen weights). The autotuning's choice tables are not printed."""
    if device.type != "cpu":
        return None
    return {
        "freezing": True,
        "max_autotune": True,
        "max_autotune_gemm": True,
        "max_autotune_gemm_backends": "CPP,ATEN",
        "autotune_num_choices_displayed": 0,
        "max_autotune_report_choices_stats": False,
    }


def _tapped_view(
    parts: ModelParts, layers: Sequence[int], rows: int, lens_dtype: torch.dtype | None
) -> tuple[nn.Module, _Recorder, nn.Module]:
    """The base model running ``max(layers)`` blocks that record ``layers``, and the unembedding to use."""
    depth = max(1, max(layers))
    recorder = _Recorder()
    taps = nn.ModuleList(
        _Tap(parts.blocks[i], recorder, output=(i + 1) in layers, input=i == 0 and 0 in layers) for i in range(depth)
    )
    owner, attr = blocks_attr(parts)
    if owner is not parts.base:
        raise CompileUnavailable("the block list is not held by the base model itself")
    view = copy.copy(parts.base)
    view._modules = {**parts.base._modules, attr: taps}
    unembed = lens_projection(parts.model, lens_dtype, rows)  # None: the model's own precision
    return view, recorder, parts.unembed if unembed is None else unembed


class CompiledStep:
    """One compiled decoding step and its static cache, for one (strategy, lens, batch size, length bucket).

    Attributes:
        compile_seconds: wall time of the first compiled call (the cold compile), ``None`` before it.
        compiled: whether steps run compiled (``False`` after a failed compile: eager on the static cache).
    """

    def __init__(
        self,
        model: nn.Module,
        strategy: Strategy,
        lens: Lens,
        batch: int,
        length: int,
        lens_dtype: torch.dtype | None = None,
        weights_version: int = 0,
    ) -> None:
        from transformers.cache_utils import StaticCache, StaticLayer

        parts = model_parts(model)
        self.layers = strategy.check_model(parts.num_layers)
        self.lens, self.strategy, self.length = lens, strategy, length
        self.parts = parts
        self.view, self.recorder, self.unembed = _tapped_view(parts, self.layers, batch, lens_dtype)
        try:
            self.cache = StaticCache(config=model.config, max_cache_len=length)
        except Exception as error:  # architectures whose config the static cache cannot size
            raise CompileUnavailable(f"no static KV cache for {type(model).__name__}: {error}") from error
        # Sliding-window layers of a static cache track their length as a Python int, which a compiled graph guards
        # on (one recompilation per token): keep every position there too; the mask still applies the window.
        for index, layer in enumerate(self.cache.layers):
            if type(layer) is not StaticLayer:
                self.cache.layers[index] = StaticLayer(max_cache_len=length)
        self.compiled = True
        self.compile_seconds: float | None = None
        # Read in the step, so that dynamo guards on it: a step over the same modules after their weights changed
        # compiles anew instead of reusing a graph whose frozen weights are the old ones.
        self.weights_version = weights_version
        self._compiled_step = torch.compile(self._step, dynamic=False, fullgraph=False)
        # Settings patched around each call (torch.compile's own ``options`` did not reach freezing), and room for
        # the graphs of many steps: past dynamo's default of 8 per code object it would run new steps uncompiled.
        self._settings = (
            torch._inductor.config.patch(inductor_options(parts.unembed.weight.device) or {}),
            torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT),
        )

    def _step(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``input_ids, position_ids: [batch, n]``, ``attention_mask: [batch, length]`` -> logits ``[batch, vocab]``
        and the strategy's info."""
        if self.weights_version < 0:
            raise AssertionError("unreachable: a guard on the weights' version")
        self.recorder.hidden.clear()
        self.view(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=True,
            **{self.parts.cache_kwarg: self.cache},
        )
        hidden = torch.stack([h[:, -1] for h in self.recorder.hidden], dim=1)  # [batch, n_layers, d_model]
        self.recorder.hidden.clear()
        lens_logits = self.lens.project(hidden, self.layers, projection=self.unembed)
        # The strategy's input check is skipped here, compiled or not (dynamo may run this frame eagerly, e.g. past
        # its recompile limit): NaN or +inf lens logits make the decision NaN, which the decoding loop refuses.
        combine = getattr(type(self.strategy).__call__, "__wrapped__", type(self.strategy).__call__)
        decision = combine(self.strategy, lens_logits, self.layers)
        return decision.logits.where(lens_logits.amax() < math.inf, math.nan), dict(decision.info)

    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> StrategyOutput:
        """Reset the cache and run the prompt eagerly. ``attention_mask: [batch, length]`` (static length)."""
        self.cache.reset()
        try:
            logits, info = self._step(input_ids, position_ids, attention_mask)
        except CompileUnavailable:
            raise
        except Exception as error:
            raise CompileUnavailable(f"the static-cache prefill failed: {error}") from error
        return StrategyOutput(logits=logits, info=info)

    def step(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> StrategyOutput:
        """One new token per row: ``input_ids, position_ids: [batch, 1]``."""
        if self.compiled:
            start = time.perf_counter()
            try:
                with self._settings[0], self._settings[1], warnings.catch_warnings():
                    # inductor's C++ GEMM template reads a deprecated storage API while it compiles: not the user's
                    warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
                    logits, info = self._compiled_step(input_ids, position_ids, attention_mask)
            except Exception as error:  # no C compiler, an unsupported operation...
                self.compiled = False
                warnings.warn(
                    f"compile=True: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                    "decoding eagerly instead",
                    RuntimeWarning,
                    stacklevel=4,
                )
            else:
                if self.compile_seconds is None:
                    self.compile_seconds = time.perf_counter() - start
                    release_freed_heap()  # what compiling freed; the packed weights stay
                return StrategyOutput(logits=logits, info=info)
        logits, info = self._step(input_ids, position_ids, attention_mask)
        return StrategyOutput(logits=logits, info=info)


def compiled_step(
    model: nn.Module,
    strategy: Strategy,
    lens: Lens,
    batch: int,
    positions: int,
    lens_dtype: torch.dtype | None = None,
) -> CompiledStep:
    """The compiled step for this model, strategy, lens, batch size and lens precision, covering ``positions`` (made
    once, kept on the model, reused by later calls in the same length bucket)."""
    length = -(-positions // LENGTH_BUCKET) * LENGTH_BUCKET
    weight = model_parts(model).unembed.weight
    learned = next(iter(lens.parameters()), None) is not None  # a logit lens is the same whatever its object
    lens_key = (type(lens), lens.apply_final_norm, id(lens) if learned else None, lens_dtype)
    key = (strategy.to_spec(), type(strategy), lens_key, batch, length, weight.dtype, weight.device)
    weights = [*model.parameters(), *lens.parameters()]
    version = hash(tuple((p.data_ptr(), p._version) for p in weights))  # changes with any in-place edit
    steps = model.__dict__.setdefault("_lenssample_compiled_steps", {})
    if key not in steps or steps[key][0] != version:
        steps.pop(key, None)  # a step compiled on weights since edited: drop it (and its packed weights) first
        steps[key] = (version, CompiledStep(model, strategy, lens, batch, length, lens_dtype, version % 2**62))
    return steps[key][1]
