"""Side-by-side decoding speed of variants (strategies and schedules), against ``FinalLayer`` greedy and
transformers' ``model.generate``: the one timing loop of lenssample.

Every variant generates exactly ``new_tokens`` tokens greedily (EOS ignored) from the same prompt (repeated
``batch`` times). Runs alternate between variants (forward order, then reversed, ...) after one warm-up round, so
that drifts in machine load hit every variant alike; figures are medians over the timed rounds, and each is also
given as a ratio to ``final`` (lenssample's ``FinalLayer`` greedy) and to ``hf_generate`` measured in the same run.
Timings on a shared machine are noisy: read the ratios, not the absolute numbers.

Per variant: ``ms_per_token`` (wall time / new tokens), ``tokens_per_s``, ``ttft_ms`` (time to first token: the
streamer's first generated token), ``speedup_vs_final`` (``final``'s time / the variant's in the same round, median
over rounds), ``blocks_per_token`` (``trace.blocks_per_step``; the full depth for ``hf_generate``),
``peak_memory_mb`` (CUDA: ``max_memory_allocated``; CPU: the peak resident-set growth over the run, sampled every
2 ms), ``identical_to_final`` (its tokens equal ``final``'s); from the trace, speculative schedules'
``acceptance_rate`` (else ``None``), ``drafted``, ``accepted``, ``accept_histogram``, ``plain_steps``, and the means
over steps of ``exit_layer`` (early exit), ``propagated`` (attention-only calls filling skipped layers) and
``premature_layer`` (DoLa) as ``mean_<name>``. With ``quality=True``, the full model's view of what the variant
generated: ``full_model_nll`` (negative log-likelihood per generated token under the full model; greedy's own text
is the reference) and ``full_model_agreement`` (how often a token is the full model's argmax given the same
prefix), the measure of quality for schedules that have no teacher-forced distribution (early exit).

The fast path: ``compiled=True`` adds ``LABEL compiled`` for every strategy variant (``compile=True``; schedules
have no compiled step), with its cold ``compile_seconds``; ``hf_compiled=True`` adds ``hf_generate_compiled``
(transformers' static KV cache with its own ``torch.compile`` of the forward, on any device). Every runner's
``warmup_seconds`` is its untimed first run (compilation included). ``floor=True`` measures the machine's read
bandwidth in the same run and reports the weight-read floor: the bytes of weights one decoding step reads
(:func:`weight_bytes`) over that bandwidth, and each variant's ``ratio_to_floor``. With ``batch > 1``,
``tokens_per_s`` counts the tokens of every row.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import CompileConfig, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from lenssample.api import decoder, generate
from lenssample.eval.config import Variant, as_variant, check_variants
from lenssample.lens.base import Lens
from lenssample.model.adapters import model_parts
from lenssample.schedules.base import Schedule
from lenssample.strategies.base import Strategy
from lenssample.validation import check_int, check_length, check_tokenizer

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
HF = "hf_generate"
FINAL = "final"
CUSTOM = "final_custom_generate"
HF_COMPILED = "hf_generate_compiled"
COMPILED = " compiled"  # suffix of a strategy variant's compiled run
SPECULATIVE_COUNTS = ("drafted", "accepted", "accept_histogram", "plain_steps")
TRACE_MEANS = ("exit_layer", "propagated", "premature_layer")


class _Clock(BaseStreamer):
    """Records the time of each ``put``; the first put is the prompt, the second the first new token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import resource

    return pages * resource.getpagesize()


class _PeakMemory:
    """Peak memory growth during a block: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        self.base = _rss_bytes()
        self._top = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        if self.base is not None:
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._top = max(self._top, _rss_bytes() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif self.base is not None:
            self._stop.set()
            self._thread.join()
            self._top = max(self._top, _rss_bytes() or 0)
            self.peak = self._top - self.base


def trace_figures(trace: Any) -> dict[str, Any]:
    """Speculative counts and the per-step means of a trace (``None``: transformers' own loop)."""
    if trace is None:
        return {"acceptance_rate": None}
    figures: dict[str, Any] = {"acceptance_rate": getattr(trace, "acceptance_rate", None)}
    figures.update({key: getattr(trace, key) for key in SPECULATIVE_COUNTS if hasattr(trace, key)})
    for key in TRACE_MEANS:
        if key in trace.info:
            values = trace.info[key][trace.info[key] >= 0].float()  # -1: after a row's last step
            figures[f"mean_{key}"] = float(values.mean()) if values.numel() else None
    return figures


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one full decoding step reads: every parameter and buffer of floating point once (shared
    ones once), except an input embedding that is not also the unembedding (a step reads one row of it)."""
    parts = model_parts(model)
    embedding = model.get_input_embeddings().weight
    skip = set() if embedding is parts.unembed.weight else {embedding.data_ptr()}
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point() and tensor.data_ptr() not in skip:
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def read_bandwidth(device: torch.device, size_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes per second this device reads: the best of ``repeats`` sums of a ``size_bytes`` float32 tensor (with
    torch's threads, as decoding uses them)."""
    values = torch.ones(size_bytes // 4, device=device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        values.sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return size_bytes / best


def runner_labels(
    variants: Mapping[str, Variant],
    *,
    include_hf: bool,
    custom_generate: bool,
    compiled: bool,
    hf_compiled: bool,
) -> list[str]:
    """The labels :func:`bench` times for these variants and options (``final`` first)."""
    labels = [FINAL, *(label for label in variants if label != FINAL)]
    compiled_labels = [
        label + COMPILED for label in labels if FINAL == label or variants[label].schedule is None
    ]
    return [
        *([HF] if include_hf else []),
        *([HF_COMPILED] if hf_compiled else []),
        *([CUSTOM] if custom_generate else []),
        *labels,
        *(compiled_labels if compiled else []),
    ]


@torch.inference_mode()
def full_model_quality(model: nn.Module, sequences: torch.Tensor, prompt_length: int) -> dict[str, float]:
    """The full model's view of generated tokens ``sequences[0, prompt_length:]``: NLL per token and how often each
    is the full model's argmax given the same prefix."""
    logits = model(sequences).logits[0, prompt_length - 1 : -1].float()
    targets = sequences[0, prompt_length:]
    log_probs = torch.log_softmax(logits, -1)
    nll = -log_probs[torch.arange(len(targets)), targets].mean()
    agreement = (logits.argmax(-1) == targets).float().mean()
    return {"full_model_nll": float(nll), "full_model_agreement": float(agreement)}


def prompt_ids(tokenizer: Any, prompt: str, device: torch.device) -> torch.Tensor:
    """``[1, n]`` the prompt through the chat template when the tokenizer has one."""
    text = prompt
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:  # e.g. a whitespace-only prompt: nothing to decode from
        raise ValueError(f"prompt {prompt!r} is empty after tokenization; pass some text")
    return torch.tensor([ids], device=device)


def bench(
    model: nn.Module,
    tokenizer: Any,
    variants: Mapping[str, Variant | Strategy | Schedule | str],
    *,
    lens: Lens | None = None,
    prompt: str = DEFAULT_PROMPT,
    new_tokens: int = 64,
    repeats: int = 3,
    include_hf: bool = True,
    custom_generate: bool = False,
    quality: bool = False,
    compiled: bool = False,
    hf_compiled: bool = False,
    batch: int = 1,
    floor: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Time each variant (and ``hf_generate``, and ``final`` if not given) side by side (see the module docstring).

    ``variants``: label -> a :class:`~lenssample.eval.config.Variant`, a strategy or schedule object, or a spec;
    ``final`` (FinalLayer), the baseline, is added when absent. ``new_tokens`` >= 2, so that per-token and
    first-token times differ; ``repeats`` timed rounds follow one warm-up round. ``custom_generate``: also time
    ``model.generate(custom_generate=lenssample's decoder)``. ``batch``: the prompt repeated; streamers and
    schedules take one row, so the time to first token is not measured and schedules are refused for ``batch > 1``.

    Returns:
        ``{"variants": {label: {figures, "ratio_to_final": {...}, "ratio_to_hf_generate": {...}, ...}},
        "new_tokens", "prompt_tokens", "batch", "repeats", "threads", "device"}`` (with ``floor``: also
        ``"weight_bytes"``, ``"read_bandwidth_gb_s"``, ``"floor_ms_per_token"``).
    """
    check_int(new_tokens, field="new_tokens", low=2)
    check_int(repeats, field="repeats", low=1)
    check_int(batch, field="batch", low=1)
    check_tokenizer(model, tokenizer)
    parts = model_parts(model)
    device = next(model.parameters()).device
    ids = prompt_ids(tokenizer, prompt, device).repeat(batch, 1)
    labelled = {label: as_variant(item, label) for label, item in variants.items()}
    labelled = labelled if FINAL in labelled else {FINAL: Variant(label=FINAL), **labelled}
    if batch > 1 and any(v.schedule is not None for v in labelled.values()):
        raise ValueError(f"batch={batch}: schedules decode one row at a time; time them with batch=1")
    check_variants(labelled.values(), parts.num_layers)  # before any timing: a variant this model cannot run
    check_length(model, ids.shape[1], new_tokens)
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=None, pad_token_id=0)  # fmt: skip
    static = CompileConfig(mode="default")
    static._compile_all_devices = True  # transformers compiles only on accelerators unless told so
    static_config = GenerationConfig(
        **config.to_diff_dict(), cache_implementation="static", compile_config=static
    )

    def stream(clock: _Clock) -> _Clock | None:
        return clock if batch == 1 else None

    def hf(generation_config: GenerationConfig, **extra: Any) -> Callable[[_Clock], tuple[torch.Tensor, Any]]:
        return lambda clock: (
            model.generate(ids, generation_config=generation_config, streamer=stream(clock), **extra),
            None,
        )

    runners: dict[str, Callable[[_Clock], tuple[torch.Tensor, Any]]] = {}
    if include_hf:
        runners[HF] = hf(config)
    if hf_compiled:
        runners[HF_COMPILED] = hf(static_config)
    if custom_generate:
        runners[CUSTOM] = hf(config, custom_generate=decoder())

    def run(variant: Variant, fast: bool, clock: _Clock) -> tuple[torch.Tensor, Any]:
        out = generate(model, ids, variant.strategy, schedule=variant.schedule, lens=lens, compile=fast,
                       max_new_tokens=new_tokens, eos_token_id=[], streamer=stream(clock))  # fmt: skip
        return out.sequences, out.trace

    runners.update({label: functools.partial(run, variant, False) for label, variant in labelled.items()})
    fast = [label for label, variant in labelled.items() if compiled and variant.schedule is None]
    runners.update({label + COMPILED: functools.partial(run, labelled[label], True) for label in fast})
    warmup: dict[str, float] = {}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    outputs: dict[str, tuple[torch.Tensor, Any]] = {}
    bar = tqdm(total=(repeats + 1) * len(runners), desc="speed", disable=not progress, leave=False)
    with torch.inference_mode(), warnings.catch_warnings():
        # Speed is measured greedily for every variant alike; DoLa's advice on repetition is about its text.
        warnings.filterwarnings("ignore", message=".*DoLa's authors use")
        for round_ in range(repeats + 1):  # round 0 warms up caches and kernels and is not timed
            for name in list(runners) if round_ % 2 == 0 else list(reversed(runners)):
                clock = _Clock()
                with _PeakMemory(device) as memory:
                    start = time.perf_counter()
                    outputs[name] = runners[name](clock)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    elapsed = time.perf_counter() - start
                made = outputs[name][0].shape[1] - ids.shape[1]
                assert made == new_tokens, f"{name} made {made} tokens instead of {new_tokens}"
                if round_ == 0:
                    warmup[name] = elapsed
                    trace = outputs[name][1]
                    if trace is not None and trace.compile_seconds is not None:
                        warmup[name + "/compile"] = trace.compile_seconds
                else:
                    runs[name].append({
                        "ms_per_token": 1000 * elapsed / new_tokens,
                        "ttft_ms": 1000 * (clock.times[1] - start) if len(clock.times) > 1 else float("nan"),
                        "peak_memory_mb": memory.peak / 2**20 if memory.peak is not None else float("nan"),
                    })  # fmt: skip
                bar.update()
    bar.close()
    bandwidth = read_bandwidth(device) if floor else None
    floor_ms = 1000 * weight_bytes(model) / bandwidth if bandwidth else None
    figures: dict[str, dict[str, Any]] = {}
    for name, values in runs.items():
        ms = statistics.median(v["ms_per_token"] for v in values)
        sequences, trace = outputs[name]
        figures[name] = {
            "ms_per_token": ms,
            "tokens_per_s": batch * 1000.0 / ms,
            "warmup_seconds": warmup[name],
            "compile_seconds": warmup.get(name + "/compile"),
            "ratio_to_floor": _ratio(ms, floor_ms),
            "ttft_ms": statistics.median(v["ttft_ms"] for v in values),
            "speedup_vs_final": statistics.median(
                f["ms_per_token"] / v["ms_per_token"] for f, v in zip(runs[FINAL], values)
            ),
            "blocks_per_token": float(trace.blocks_per_step if trace is not None else parts.num_layers),
            **trace_figures(trace),
            "peak_memory_mb": statistics.median(v["peak_memory_mb"] for v in values),
            "identical_to_final": bool(torch.equal(sequences, outputs[FINAL][0])),
            "runs_ms_per_token": [v["ms_per_token"] for v in values],
        }
        if quality:
            figures[name].update(full_model_quality(model, sequences, ids.shape[1]))
    ratio_keys = ("ms_per_token", "tokens_per_s", "ttft_ms", "blocks_per_token", "peak_memory_mb")
    for fig in figures.values():
        for base in (FINAL, HF, FINAL + COMPILED):
            if base in figures:
                fig[f"ratio_to_{base}"] = {key: _ratio(fig[key], figures[base][key]) for key in ratio_keys}
    result = {"variants": figures, "new_tokens": new_tokens, "prompt_tokens": int(ids.shape[1]), "batch": batch,
              "repeats": repeats, "threads": torch.get_num_threads(), "device": str(device)}  # fmt: skip
    if floor:
        result.update(weight_bytes=weight_bytes(model), read_bandwidth_gb_s=bandwidth / 1e9,
                      floor_ms_per_token=floor_ms)  # fmt: skip
    return result


def _ratio(value: float | None, base: float | None) -> float | None:
    defined = value is not None and base and value == value and base == base  # neither None, 0 (base) nor NaN
    return value / base if defined else None
