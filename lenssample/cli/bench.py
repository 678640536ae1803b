"""``lenssample bench final dola:layers=high early-exit:threshold=0.9``: decoding speed of strategies and schedules
side by side, with ratios to ``FinalLayer`` greedy and to transformers' ``model.generate`` in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lenssample.cli import COMMANDS
from lenssample.cli.common import add_model_args, check_positive, lens_from_args, load
from lenssample.validation import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help=COMMANDS["bench"])
    parser.add_argument("variants", nargs="*", metavar="SPEC",
                        help="strategy or schedule specs, e.g. final dola:layers=high speculative:draft_layer=24")  # fmt: skip
    parser.add_argument(
        "--strategies", default=None, help=argparse.SUPPRESS
    )  # deprecated: a comma list of specs
    add_model_args(parser)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--prompt", default=None, help="the prompt (default: a short-story request)")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers' model.generate")
    parser.add_argument("--custom-generate", action="store_true",
                        help="also time model.generate(custom_generate=lenssample's decoder)")  # fmt: skip
    parser.add_argument("--quality", action="store_true",
                        help="also report the full model's NLL and argmax agreement of each variant's tokens")  # fmt: skip
    parser.add_argument("--compiled", action="store_true",
                        help="also time every strategy with compile=True (LABEL compiled; cold compile reported)")  # fmt: skip
    parser.add_argument("--hf-compiled", action="store_true",
                        help="also time model.generate with a static KV cache and its compiled forward")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1, help="rows decoded at once (the prompt repeated)")
    parser.add_argument("--floor", action="store_true",
                        help="measure the read bandwidth and report each variant's ratio to the weight-read floor")  # fmt: skip
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.eval.config import split_variant_list, variant_entry
    from lenssample.eval.speed import DEFAULT_PROMPT, bench

    check_positive(args.new_tokens, "--new-tokens", low=2)
    check_positive(args.repeats, "--repeats")
    check_positive(args.batch, "--batch")
    if args.prompt == "":
        raise ValueError("--prompt is empty; pass some text, or leave --prompt out for the default one")
    specs = [*args.variants, *(split_variant_list(args.strategies) if args.strategies else [])]
    entries = [variant_entry(spec) for spec in specs or ["final"]]
    variants = {entry.label: entry for entry in entries}
    if len(variants) < len(entries):
        twice = next(label for label in variants if sum(entry.label == label for entry in entries) > 1)
        raise ValueError(f"SPEC {twice!r} is given twice; give each variant once")
    if args.out:
        check_output_file(args.out, suffixes=(".json",), field="--out")
    args.resume_hint = "nothing was written; rerun to time again (each run starts over)"
    model, tokenizer = load(args)
    result = bench(
        model, tokenizer, variants, lens=lens_from_args(args, model), prompt=args.prompt or DEFAULT_PROMPT,
        new_tokens=args.new_tokens, repeats=args.repeats, include_hf=not args.no_hf,
        custom_generate=args.custom_generate, quality=args.quality, compiled=args.compiled,
        hf_compiled=args.hf_compiled, batch=args.batch, floor=args.floor, progress=True,
    )  # fmt: skip
    if args.floor:
        print(f"weights read per step {result['weight_bytes'] / 1e6:.0f} MB, read bandwidth "
              f"{result['read_bandwidth_gb_s']:.1f} GB/s: floor {result['floor_ms_per_token']:.1f} ms/token")  # fmt: skip
    bases = [("final", "x final"), ("hf_generate", "x hf"), ("final compiled", "x comp")]
    quality = [("full_model_nll", "full NLL"), ("full_model_agreement", "agree")] if args.quality else []
    print(f"{'variant':34} {'ms/token':>9} {'tok/s':>7} {'TTFT ms':>8} {'blocks':>6} {'accept':>6} "
          + " ".join(f"{title:>7}" for _, title in bases) + f" {'x floor':>7} {'compile s':>9}"
          + "".join(f" {title:>8}" for _, title in quality) + " same")  # fmt: skip
    for name, fig in result["variants"].items():
        ratios = [(fig.get(f"ratio_to_{base}") or {}).get("ms_per_token") for base, _ in bases]
        print(
            f"{name:34} {_cell(fig['ms_per_token'], '.1f', 9)} {_cell(fig['tokens_per_s'], '.1f', 7)} "
            f"{_cell(fig['ttft_ms'], '.1f', 8)} {_cell(fig['blocks_per_token'], '.1f', 6)} "
            f"{_cell(fig['acceptance_rate'], '.2f', 6)} " + " ".join(_cell(r, ".3f", 7) for r in ratios)
            + f" {_cell(fig['ratio_to_floor'], '.2f', 7)} {_cell(fig['compile_seconds'], '.1f', 9)}"
            + "".join(f" {_cell(fig.get(key), '.3f', 8)}" for key, _ in quality)
            + f" {'yes' if fig['identical_to_final'] else 'no'}"
        )
    print("-: not measured in this run (TTFT with --batch > 1, x hf with --no-hf, x comp without --compiled, x floor "
          "without --floor)")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cell(value: float | None, spec: str, width: int) -> str:
    """``value`` formatted to ``width``, or ``-`` where it was not measured (``None`` or NaN)."""
    return f"{'-' if value is None or value != value else format(value, spec):>{width}}"
