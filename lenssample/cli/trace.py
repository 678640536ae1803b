"""``lenssample trace "prompt"``: generate with a strategy or schedule and plot its per-token decisions."""

from __future__ import annotations

import argparse

from lenssample.cli import COMMANDS
from lenssample.cli.common import add_generation_args, generate_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help=COMMANDS["trace"],
    )
    add_generation_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default: 32)")
    parser.add_argument("--out", required=True, help="FILE.png, .svg or .pdf")
    parser.add_argument(
        "--key", action="append", default=None, help="trace key to plot, repeatable (default: all)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.plotting.figures import IMAGE_SUFFIXES, plot_trace
    from lenssample.validation import check_output_file

    check_output_file(args.out, suffixes=IMAGE_SUFFIXES, field="--out")
    out, strategy, schedule, tokenizer = generate_from_args(args)
    spec = (schedule or strategy).to_spec()
    if not out.trace.info:
        raise ValueError(f"{spec!r} records no per-token decisions to plot; use a strategy that chooses layers (e.g. "
                         "--strategy dola) or a schedule (e.g. --schedule early-exit)")  # fmt: skip
    plot_trace(
        out, tokenizer, keys=args.key, title=f"{spec}: {args.prompt}{out.texts(tokenizer)[0]}", path=args.out
    )
    print(f"wrote {args.out}")
    return 0
