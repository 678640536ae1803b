"""The ``lenssample`` command line: ``main(argv) -> int``.

Each subcommand lives in its own module under :mod:`lenssample.cli` and exposes ``register(subparsers)``, which
adds its parser and sets ``func(args) -> int``. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Subcommand modules, in the order `lenssample --help` lists them.
COMMANDS = ["generate", "demo", "lens", "trace", "train-lens", "lens-eval", "eval", "bench"]


class UsageError(ValueError):
    """A bad command-line value (exit status 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lenssample", description="Decode from a language model's intermediate layers."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lenssample.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed its message
        return int(exit_.code or 0)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"lenssample {args.command}: error: {err}", file=sys.stderr)
        return 2


def console_main() -> None:
    sys.exit(main())
