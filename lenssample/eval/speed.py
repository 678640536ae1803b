"""Side-by-side decoding speed of strategies, against ``FinalLayer`` greedy and transformers' ``model.generate``.

Every variant generates exactly ``new_tokens`` tokens greedily (EOS ignored) from the same prompt, batch 1. Runs
alternate between variants (forward order, then reversed, ...) after one warm-up round, so that drifts in machine
load hit every variant alike; figures are medians over the timed rounds, and each is also given as a ratio to
``final`` (lenssample's ``FinalLayer`` greedy) and to ``hf_generate`` measured in the same run. Timings on a shared
machine are noisy: read the ratios, not the absolute numbers.

Per variant: ``ms_per_token`` (wall time / new tokens), ``tokens_per_s``, ``ttft_ms`` (time to first token: the
streamer's first generated token), ``blocks_per_token`` (``trace.blocks_per_step``; the full depth for
``hf_generate``), ``acceptance_rate`` (when the trace reports drafted/accepted tokens), ``peak_memory_mb`` (CUDA:
``max_memory_allocated``; CPU: the peak resident-set growth over the run, sampled every 2 ms).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from lenssample.adapters import model_parts
from lenssample.decoding.api import generate
from lenssample.lens.base import Lens
from lenssample.strategies.base import FinalLayer, Strategy

DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
HF = "hf_generate"
FINAL = "final"


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


def _acceptance_rate(trace: Any) -> float | None:
    rate = getattr(trace, "acceptance_rate", None)
    if rate is not None:
        return float(rate)
    info = getattr(trace, "info", {}) or {}
    if "accepted" in info and "drafted" in info:
        drafted = float(info["drafted"].sum())
        return float(info["accepted"].sum()) / drafted if drafted else None
    return None


def bench(
    model: nn.Module,
    tokenizer: Any,
    strategies: Mapping[str, Strategy],
    *,
    lens: Lens | None = None,
    prompt: str = DEFAULT_PROMPT,
    new_tokens: int = 64,
    repeats: int = 3,
    include_hf: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Time each strategy (and ``hf_generate``, and ``final`` if not given) side by side.

    Args:
        model, tokenizer: the model and its tokenizer (the prompt goes through the chat template when it has one).
        strategies: label -> strategy. ``final`` (FinalLayer) is added when absent: it is the baseline.
        lens: the lens for every strategy.
        new_tokens: tokens generated per run (>= 2, so that per-token and first-token times differ).
        repeats: timed rounds (after one warm-up round).

    Returns:
        ``{"variants": {label: {figures, "ratio_to_final": {...}, "ratio_to_hf_generate": {...}}}, "new_tokens",
        "prompt_tokens", "repeats", "threads", "device"}``.
    """
    for name, value, low in (("new_tokens", new_tokens, 2), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    parts = model_parts(model)
    device = next(model.parameters()).device
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    else:
        text = prompt
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)], device=device)
    labelled = dict(strategies)
    if FINAL not in labelled:
        labelled = {FINAL: FinalLayer(), **labelled}
    for strategy in labelled.values():
        strategy.check_model(parts.num_layers)
    config = GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    variants: dict[str, Callable[[_Clock], tuple[torch.Tensor, Any]]] = {}
    if include_hf:
        variants[HF] = lambda clock: (model.generate(ids, generation_config=config, streamer=clock), None)
    for label, strategy in labelled.items():

        def run(clock: _Clock, strategy: Strategy = strategy) -> tuple[torch.Tensor, Any]:
            out = generate(
                model,
                ids,
                strategy=strategy,
                lens=lens,
                max_new_tokens=new_tokens,
                eos_token_id=[],
                streamer=clock,
            )
            return out.sequences, out.trace

        variants[label] = run
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    traces: dict[str, Any] = {}
    bar = tqdm(total=(repeats + 1) * len(variants), desc="speed", disable=not progress, leave=False)
    with torch.inference_mode():
        for round_ in range(repeats + 1):  # round 0 warms up caches and kernels and is not timed
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                clock = _Clock()
                with _PeakMemory(device) as memory:
                    start = time.perf_counter()
                    sequences, trace = variants[name](clock)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    elapsed = time.perf_counter() - start
                made = sequences.shape[1] - ids.shape[1]
                assert made == new_tokens, f"{name} made {made} tokens instead of {new_tokens}"
                traces[name] = trace
                if round_ > 0:
                    runs[name].append(
                        {
                            "ms_per_token": 1000 * elapsed / new_tokens,
                            "ttft_ms": 1000 * (clock.times[1] - start)
                            if len(clock.times) > 1
                            else float("nan"),
                            "peak_memory_mb": memory.peak / 2**20
                            if memory.peak is not None
                            else float("nan"),
                        }
                    )
                bar.update()
    bar.close()
    figures: dict[str, dict[str, Any]] = {}
    for name, values in runs.items():
        ms = statistics.median(v["ms_per_token"] for v in values)
        trace = traces[name]
        figures[name] = {
            "ms_per_token": ms,
            "tokens_per_s": 1000.0 / ms,
            "ttft_ms": statistics.median(v["ttft_ms"] for v in values),
            "blocks_per_token": float(trace.blocks_per_step)
            if trace is not None
            else float(parts.num_layers),
            "acceptance_rate": _acceptance_rate(trace) if trace is not None else None,
            "peak_memory_mb": statistics.median(v["peak_memory_mb"] for v in values),
            "runs_ms_per_token": [v["ms_per_token"] for v in values],
        }
    ratio_keys = ("ms_per_token", "tokens_per_s", "ttft_ms", "blocks_per_token", "peak_memory_mb")
    for fig in figures.values():
        for base in (FINAL, HF):
            if base in figures:
                fig[f"ratio_to_{base}"] = {key: _ratio(fig[key], figures[base][key]) for key in ratio_keys}
    return {
        "variants": figures,
        "new_tokens": new_tokens,
        "prompt_tokens": int(ids.shape[1]),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }


def _ratio(value: float, base: float) -> float | None:
    if value is None or base is None or base == 0 or value != value or base != base:
        return None
    return value / base
