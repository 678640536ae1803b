"""``lenssample bench --strategies final,layer:layer=24``: decoding speed side by side, with ratios to
``FinalLayer`` greedy and to transformers' ``model.generate`` measured in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lenssample.cli.common import add_lens_args, add_model_args, lens_from_args, load


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="time strategies side by side (ms/token, ratios)")
    parser.add_argument(
        "--strategies",
        default="final",
        help="comma-separated strategies, each name[:key=value...] (e.g. final,layer:layer=24)",
    )
    add_model_args(parser)
    add_lens_args(parser)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--prompt", default=None, help="the prompt (default: a short-story request)")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers' model.generate")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from lenssample.eval.config import split_strategy_list, strategy_entry
    from lenssample.eval.speed import DEFAULT_PROMPT, bench

    if args.new_tokens < 2:
        raise ValueError(f"--new-tokens {args.new_tokens}: must be >= 2")
    if args.repeats < 1:
        raise ValueError(f"--repeats {args.repeats}: must be >= 1")
    entries = [strategy_entry(text) for text in split_strategy_list(args.strategies)]
    if not entries:
        raise ValueError("--strategies is empty; pass e.g. --strategies final,layer:layer=24")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args)
    result = bench(
        model,
        tokenizer,
        {e.label: e.strategy for e in entries},
        lens=lens_from_args(args, model),
        prompt=args.prompt or DEFAULT_PROMPT,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        include_hf=not args.no_hf,
        progress=True,
    )
    print(
        f"{'variant':24} {'ms/token':>9} {'tok/s':>7} {'TTFT ms':>8} {'blocks':>6} {'x final':>8} {'x hf':>6}"
    )
    for name, fig in result["variants"].items():
        to_final = (fig.get("ratio_to_final") or {}).get("ms_per_token")
        to_hf = (fig.get("ratio_to_hf_generate") or {}).get("ms_per_token")
        print(
            f"{name:24} {fig['ms_per_token']:9.1f} {fig['tokens_per_s']:7.1f} {fig['ttft_ms']:8.1f} "
            f"{fig['blocks_per_token']:6.1f} {to_final or float('nan'):8.3f} {to_hf or float('nan'):6.3f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
