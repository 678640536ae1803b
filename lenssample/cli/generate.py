"""``lenssample generate "prompt"``: generate text with a lens strategy or a compute schedule."""

from __future__ import annotations

import argparse
import json

from lenssample.cli import COMMANDS
from lenssample.cli.common import SETTINGS_FLAGS, add_dataclass_args, add_generation_args, generate_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from lenssample.decoding.settings import DecodingSettings

    parser = subparsers.add_parser("generate", help=COMMANDS["generate"])
    add_generation_args(parser)
    add_dataclass_args(parser, DecodingSettings, names=SETTINGS_FLAGS)
    parser.add_argument("--json", action="store_true", help="print a JSON object (text, tokens, trace)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out, strategy, schedule, tokenizer = generate_from_args(args)
    text = out.texts(tokenizer)[0]
    if not args.json:
        print(text)
        return 0
    print(json.dumps({"prompt": args.prompt, "strategy": strategy.to_dict(),
                      "schedule": schedule.to_dict() if schedule is not None else None, "text": text,
                      "tokens": out.new_tokens[0].tolist(), "trace": out.trace.to_dict()}))  # fmt: skip
    return 0
