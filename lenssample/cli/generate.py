"""``lenssample generate "prompt"``: generate text with a lens strategy."""

from __future__ import annotations

import argparse
import json
import sys

from lenssample.cli.common import (
    add_lens_args,
    add_model_args,
    add_strategy_args,
    lens_from_args,
    load,
    strategy_from_args,
)
from lenssample.cli.schedule import add_schedule_args, schedule_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate text with a lens strategy")
    parser.add_argument("prompt", help="the prompt text")
    add_model_args(parser)
    add_strategy_args(parser)
    add_lens_args(parser)
    add_schedule_args(parser)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--json", action="store_true", help="print a JSON object (text, tokens, trace)")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be >= 1")
    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")


def run(args: argparse.Namespace) -> int:
    from lenssample.decoding.api import generate

    check_args(args)
    strategy = strategy_from_args(args)  # validated before the model loads
    schedule = schedule_from_args(args)
    model, tokenizer = load(args)
    lens = lens_from_args(args, model)
    prompt = args.prompt
    if args.chat:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    out = generate(
        model,
        prompt,
        tokenizer=tokenizer,
        strategy=strategy,
        lens=lens,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        schedule=schedule,
    )
    text = out.texts(tokenizer)[0]
    if args.json:
        record = {
            "prompt": args.prompt,
            "strategy": strategy.to_dict(),
            "schedule": schedule.to_dict() if schedule is not None else None,
            "text": text,
            "tokens": out.new_tokens[0].tolist(),
            "trace": out.trace.to_dict(),
        }
        json.dump(record, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(text)
    return 0
