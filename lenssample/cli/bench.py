"""``lenssample bench final dola:layers=high early-exit:threshold=0.9``: decoding speed of strategies and schedules
side by side, with ratios to ``FinalLayer`` greedy and to transformers' ``model.generate`` in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lenssample.cli.common import add_model_args, check_positive, lens_from_args, load
from lenssample.validation import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time strategies and schedules side by side (ms/token, ratios)"
    )
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
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.eval.config import split_variant_list, variant_entry
    from lenssample.eval.speed import DEFAULT_PROMPT, bench

    check_positive(args.new_tokens, "--new-tokens", low=2)
    check_positive(args.repeats, "--repeats")
    specs = [*args.variants, *(split_variant_list(args.strategies) if args.strategies else [])]
    variants = {entry.label: entry for entry in (variant_entry(spec) for spec in specs or ["final"])}
    if args.out:
        check_output_file(args.out, field="--out")
    model, tokenizer = load(args)
    result = bench(
        model, tokenizer, variants, lens=lens_from_args(args, model), prompt=args.prompt or DEFAULT_PROMPT,
        new_tokens=args.new_tokens, repeats=args.repeats, include_hf=not args.no_hf,
        custom_generate=args.custom_generate, quality=args.quality, progress=True,
    )  # fmt: skip
    print(f"{'variant':34} {'ms/token':>9} {'tok/s':>7} {'TTFT ms':>8} {'blocks':>6} {'accept':>6} {'x final':>8} "
          f"{'x hf':>6} same")  # fmt: skip
    for name, fig in result["variants"].items():
        to_final = (fig.get("ratio_to_final") or {}).get("ms_per_token")
        to_hf = (fig.get("ratio_to_hf_generate") or {}).get("ms_per_token")
        accept = fig["acceptance_rate"]
        print(
            f"{name:34} {fig['ms_per_token']:9.1f} {fig['tokens_per_s']:7.1f} {fig['ttft_ms']:8.1f} "
            f"{fig['blocks_per_token']:6.1f} {'' if accept is None else f'{accept:.2f}':>6} "
            f"{to_final or float('nan'):8.3f} {to_hf or float('nan'):6.3f} {'yes' if fig['identical_to_final'] else 'no'}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
