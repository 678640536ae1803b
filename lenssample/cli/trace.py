"""``lenssample trace "prompt"``: generate with a strategy and plot its per-token decisions (chosen layers, ...)."""

from __future__ import annotations

import argparse

from lenssample.cli.common import (
    add_lens_args,
    add_model_args,
    add_strategy_args,
    lens_from_args,
    load,
    strategy_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace", help="plot the layers a strategy chose (or drafts it accepted) at each generated token"
    )
    parser.add_argument("prompt", help="the prompt text")
    add_model_args(parser)
    add_strategy_args(parser)
    add_lens_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", required=True, help="FILE.png, .svg or .pdf")
    parser.add_argument(
        "--key", action="append", default=None, help="trace key to plot, repeatable (default: all)"
    )
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.decoding.api import generate
    from lenssample.viz import check_output_path, plot_trace

    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    check_output_path(args.out)
    strategy = strategy_from_args(args)  # validated before the model loads
    model, tokenizer = load(args)
    lens = lens_from_args(args, model)
    prompt = args.prompt
    if args.chat:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    out = generate(
        model, prompt, tokenizer=tokenizer, strategy=strategy, lens=lens, max_new_tokens=args.max_new_tokens
    )
    if not out.trace.info:
        raise ValueError(
            f"strategy {strategy.name!r} records no per-token decisions to plot; use a strategy that chooses "
            "layers or drafts (e.g. DoLa, early exit, self-speculative)"
        )
    title = f"{strategy.to_dict()}: {args.prompt}{out.texts(tokenizer)[0]}"
    plot_trace(out, tokenizer, keys=args.key, title=title[:160], path=args.out)
    print(f"wrote {args.out}")
    return 0
