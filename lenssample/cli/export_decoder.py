"""``lenssample export-decoder DIR --strategy SPEC``: a Hub-style ``custom_generate`` folder for a strategy."""

from __future__ import annotations

import argparse

from lenssample.cli import COMMANDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-decoder",
        help=COMMANDS["export-decoder"],
        description="Write a Hub-style custom_generate folder (generate.py, requirements.txt, model card) that "
        "decodes with a lenssample strategy or schedule inside transformers' model.generate.",
    )
    parser.add_argument("directory", help="folder to write (created)")
    parser.add_argument(
        "--strategy", default=None, help="strategy spec, e.g. dola:layers=high (default: final)"
    )
    parser.add_argument("--schedule", default=None, help="schedule spec, e.g. early-exit:threshold=0.9")
    parser.add_argument("--lens", default=None, help="'logit' (default), or a tuned-lens folder or hub id")
    parser.add_argument("--compile", action="store_true", help="decode with the compiled step")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lenssample.integrations.hub import export_decoder

    folder = export_decoder(
        args.directory, args.strategy, schedule=args.schedule, lens=args.lens, compile=args.compile
    )
    print(f"wrote {folder}/custom_generate/generate.py; use: model.generate(ids, custom_generate={str(folder)!r}, "
          "trust_remote_code=True)")  # fmt: skip
    return 0
