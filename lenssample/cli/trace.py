"""``lenssample trace "prompt"``: generate with a strategy or schedule and plot its per-token decisions."""

from __future__ import annotations

import argparse

from lenssample.cli.common import (
    add_lens_args,
    add_model_args,
    add_strategy_args,
    lens_from_args,
    load,
    schedule_from_args,
    strategy_from_args,
)
from lenssample.cli.generate import chat_prompt


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="plot the layers a strategy chose (or drafts a schedule accepted) at each generated token",
    )
    parser.add_argument("prompt", help="the prompt text")
    add_model_args(parser)
    add_strategy_args(parser)
    add_lens_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default: 32)")
    parser.add_argument("--out", required=True, help="FILE.png, .svg or .pdf")
    parser.add_argument(
        "--key", action="append", default=None, help="trace key to plot, repeatable (default: all)"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.api import generate
    from lenssample.decoding.settings import DecodingSettings
    from lenssample.plotting.figures import check_output_path, plot_trace

    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")
    given = {} if args.max_new_tokens is None else {"max_new_tokens": args.max_new_tokens}
    settings = DecodingSettings(**given)
    check_output_path(args.out)
    strategy, schedule = (
        strategy_from_args(args),
        schedule_from_args(args),
    )  # validated before the model loads
    model, tokenizer = load(args)
    out = generate(model, chat_prompt(args, tokenizer), strategy, schedule=schedule, lens=lens_from_args(args, model),
                   tokenizer=tokenizer, settings=settings)  # fmt: skip
    if not out.trace.info:
        raise ValueError(
            f"{(schedule or strategy).to_spec()!r} records no per-token decisions to plot; use a strategy that "
            "chooses layers (e.g. --strategy dola) or a schedule (e.g. --schedule early-exit)"
        )
    title = f"{(schedule or strategy).to_spec()}: {args.prompt}{out.texts(tokenizer)[0]}"
    plot_trace(out, tokenizer, keys=args.key, title=title, path=args.out)
    print(f"wrote {args.out}")
    return 0
