"""The ``lenssample`` command line: ``main(argv) -> int``.

Each subcommand lives in its own module under :mod:`lenssample.cli` and exposes ``register(subparsers)``, which
adds its parser and sets ``func(args) -> int``. Bad input exits with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

# Subcommands, in the order `lenssample --help` lists them, with the one line it shows for each. Each lives in the
# module of its name (dashes as underscores), whose ``register`` adds its full parser.
COMMANDS = {
    "generate": "generate text with a lens strategy or a compute schedule",
    "demo": "show the logit lens and lens decoders on the default model",
    "lens": "heatmap of the lens's top-1 token per layer and position of a text (PNG/SVG/HTML)",
    "trace": "plot the layers a strategy chose (or drafts a schedule accepted) at each generated token",
    "train-lens": "train a tuned lens (CPU, minutes) and save it",
    "lens-eval": "compare the logit lens and tuned lenses per layer",
    "eval": "run an evaluation sweep from a TOML file",
    "bench": "time strategies and schedules side by side (ms/token, ratios)",
    "export-decoder": "write a custom_generate folder for model.generate(custom_generate=DIR, trust_remote_code=True)",
    "doctor": "verify cached models and lenses against their manifests (rebuilds damaged models)",
}


class Parser(argparse.ArgumentParser):
    """argparse's parser (subcommands inherit it) with one-line errors instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        if message.endswith("expected one argument"):  # argparse takes "-1,5" for an option, not a value
            message += "; write a value that starts with '-' as --flag=VALUE (e.g. --layers=-1,5)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; given the command line ``argv``, only the command it names is built in full
    (its module imports torch and transformers: seconds), the others are listed for ``--help``."""
    parser = Parser(prog="lenssample", description="Decode from a language model's intermediate layers.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (anywhere on the line)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    for name, line in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(f"lenssample.cli.{name.replace('-', '_')}").register(subparsers)
        else:
            subparsers.add_parser(name, help=line)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 an error, 130 interrupted).

    Every error, and every warning, is one line on stderr naming the problem; ``--debug`` (anywhere on the line)
    shows the traceback and warnings in Python's own form.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        parser = build_parser(argv)  # imports the chosen subcommand, so torch and transformers: seconds
    except KeyboardInterrupt:
        print("\nlenssample: interrupted", file=sys.stderr)
        return 130
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the subcommand's parser, which points at its own --help
            _unrecognized(parser, args.command, extra)
    except SystemExit as exit_:  # argparse already printed its message
        return int(exit_.code or 0)
    try:
        with warnings.catch_warnings():  # restores Python's warning display on return
            if not debug:
                warnings.showwarning = lambda message, *_, **__: print(
                    f"lenssample {args.command}: warning: {message}", file=sys.stderr
                )
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        hint = getattr(args, "resume_hint", "")
        print(f"\nlenssample {args.command}: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the command line reports every failure in one line
        if debug:
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if _out_of_memory(err):
            message = (f"out of memory ({message[:160]}); ask for less at once: a smaller --batch, fewer new tokens, "
                       "fewer layers or positions, or a shorter text")  # fmt: skip
        elif not isinstance(err, (ValueError, TypeError, OSError)):  # unexpected: say what it was
            message = f"{type(err).__name__}: {message} (rerun with --debug for the traceback)"
        print(f"lenssample {args.command}: error: {message}", file=sys.stderr)
        return 2


def _unrecognized(parser: argparse.ArgumentParser, command: str, extra: list[str]) -> NoReturn:
    """Exit 2 naming the arguments ``command`` does not take, with the closest option it does take."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = action.choices[command]
    options = [option[2:] for option in sub._option_string_actions if option.startswith("--")]
    asked = [arg.lstrip("-").split("=")[0] for arg in extra if arg.startswith("-")]
    close = [match for word in asked for match in difflib.get_close_matches(word, options, n=1)]
    hint = f"; did you mean --{close[0]}?" if close else ""
    sub.error(f"unrecognized arguments: {' '.join(extra)}{hint}")


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (Python's, CUDA's, or the CPU allocator's ``RuntimeError``)."""
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    return isinstance(err, RuntimeError) and any(
        text in str(err) for text in ("can't allocate memory", "out of memory", "Cannot allocate memory")
    )


def console_main() -> None:
    code = main()
    # The command has finished (its output is written): a Ctrl-C while Python shuts down (torch's threads, file
    # flushes: up to a second) would only turn its exit status into a silent death by SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
