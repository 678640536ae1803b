"""Time per generated token of lenssample's loop against transformers' ``model.generate``, side by side.

Variants (batch 1, greedy, EOS ignored so every run makes exactly ``--new-tokens`` tokens):
  hf_generate        transformers ``model.generate``
  final              ``lenssample.generate(strategy=FinalLayer())``
  custom_generate    ``model.generate(custom_generate=lenssample.integrations.transformers.decoder(FinalLayer()))``
  all_layers         a strategy that reads all L+1 layers through the lens (one stacked projection per step) and
                     returns the final layer: the cost of reading every layer

Runs alternate between variants (round-robin, after one warm-up round) and report medians and ratios.

    python evals/bench_decode.py --new-tokens 128 --repeats 3 --out evals/results/decode_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from lenssample.integrations.transformers import decoder
from transformers import GenerationConfig

import lenssample
from lenssample.strategies.base import Strategy, StrategyOutput

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True, kw_only=True)
class ReadAllLayers(Strategy):
    """Reads every layer (embedding to final) and returns the final one: measures the lens's cost alone."""

    name: ClassVar[str] = "bench-read-all"

    def layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(num_layers + 1))

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        return StrategyOutput(logits=lens_logits[:, -1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = lenssample.load_model(args.model)
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(chat, return_tensors="pt").input_ids
    n = args.new_tokens
    config = GenerationConfig(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
    )

    def hf_generate() -> torch.Tensor:
        return model.generate(ids, generation_config=config)

    def final() -> torch.Tensor:
        return lenssample.generate(model, ids, max_new_tokens=n, eos_token_id=[]).sequences

    def custom() -> torch.Tensor:
        return model.generate(ids, generation_config=config, custom_generate=decoder(lenssample.FinalLayer()))

    def all_layers() -> torch.Tensor:
        return lenssample.generate(
            model, ids, strategy=ReadAllLayers(), max_new_tokens=n, eos_token_id=[]
        ).sequences

    variants = {
        "hf_generate": hf_generate,
        "final": final,
        "custom_generate": custom,
        "all_layers": all_layers,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):  # round 0 is the warm-up
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                start = time.perf_counter()
                seq = variants[name]()
                elapsed = time.perf_counter() - start
                assert seq.shape[1] == ids.shape[1] + n, f"{name} made {seq.shape[1] - ids.shape[1]} tokens"
                outputs[name] = seq
                if round_ > 0:
                    times[name].append(1000 * elapsed / n)
    identical = all(torch.equal(outputs[name], outputs["hf_generate"]) for name in variants)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["hf_generate"]
    result = {
        "model": args.model or lenssample.model.loading.DEFAULT_MODEL,
        "new_tokens": n,
        "prompt_tokens": ids.shape[1],
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "all_tokens_identical_to_hf_generate": identical,
        "ms_per_token": {name: round(value, 2) for name, value in medians.items()},
        "ratio_to_hf_generate": {name: round(value / base, 3) for name, value in medians.items()},
        "ratio_to_final": {name: round(value / medians["final"], 3) for name, value in medians.items()},
        "all_runs_ms_per_token": {name: [round(v, 2) for v in values] for name, values in times.items()},
    }
    print(f"{'variant':16} {'ms/token':>9} {'x hf_generate':>14} {'x final':>8}")
    for name in variants:
        print(
            f"{name:16} {medians[name]:9.1f} {result['ratio_to_hf_generate'][name]:14.3f} "
            f"{result['ratio_to_final'][name]:8.3f}"
        )
    print(f"tokens identical to model.generate: {identical}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
