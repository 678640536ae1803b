"""``lenssample generate "prompt"``: generate text with a lens strategy or a compute schedule."""

from __future__ import annotations

import argparse
import json
import sys

from lenssample.cli.common import (
    SETTINGS_FLAGS,
    add_dataclass_args,
    add_lens_args,
    add_model_args,
    add_strategy_args,
    lens_from_args,
    load,
    schedule_from_args,
    settings_from_args,
    strategy_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from lenssample.decoding.settings import DecodingSettings

    parser = subparsers.add_parser(
        "generate", help="generate text with a lens strategy or a compute schedule"
    )
    parser.add_argument("prompt", help="the prompt text")
    add_model_args(parser)
    add_strategy_args(parser)
    add_lens_args(parser)
    add_dataclass_args(parser, DecodingSettings, names=SETTINGS_FLAGS)
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    parser.add_argument("--json", action="store_true", help="print a JSON object (text, tokens, trace)")
    parser.set_defaults(func=run)


def chat_prompt(args: argparse.Namespace, tokenizer) -> str:
    """The prompt, wrapped in the model's chat template with ``--chat``."""
    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")
    if not args.chat:
        return args.prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("--chat: this model's tokenizer has no chat template; drop --chat")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
    )


def run(args: argparse.Namespace) -> int:
    from lenssample.api import generate

    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")
    strategy, schedule = (
        strategy_from_args(args),
        schedule_from_args(args),
    )  # validated before the model loads
    settings = settings_from_args(args)
    model, tokenizer = load(args)
    out = generate(model, chat_prompt(args, tokenizer), strategy, schedule=schedule, lens=lens_from_args(args, model),
                   tokenizer=tokenizer, settings=settings)  # fmt: skip
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
