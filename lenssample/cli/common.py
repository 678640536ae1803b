"""Arguments shared by several subcommands: model, lens, strategy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lenssample.strategies.base import Strategy, parse_assignments, strategy_from_name


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="embedded model name (default: smollm2-135m-instruct; also gemma3-270m), model folder, .gguf or hub id",
    )
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_strategy_args(parser: argparse.ArgumentParser, *, default: str = "final") -> None:
    parser.add_argument("--strategy", default=default, help=f"strategy name (default: {default})")
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy hyperparameter, repeatable (e.g. --set layers=high --set alpha=0.1)",
    )


def add_lens_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lens", default="logit", help="'logit' (default) or the folder of a saved tuned lens"
    )


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    from lenssample.models import load_model

    return load_model(args.model, dtype=args.dtype, device=args.device)


def strategy_from_args(args: argparse.Namespace) -> Strategy:
    return strategy_from_name(args.strategy, **parse_assignments(args.params))


def lens_from_args(args: argparse.Namespace, model: Any) -> Any:
    """Build the lens named by ``--lens``."""
    from lenssample.lens.base import LogitLens

    spec = getattr(args, "lens", "logit")
    if spec in (None, "logit"):
        return LogitLens(model)
    try:
        from lenssample.lens.tuned import TunedLens  # provided by the tuned-lens module
    except ImportError as err:
        raise ValueError(f"--lens {spec!r}: tuned lenses are not available in this version") from err
    return TunedLens.load(spec, model)


def texts_from_arg(data: str, split: str) -> list:
    """``--data``: a packaged corpus name (its ``split``) or a UTF-8 text file (whole)."""
    from lenssample.data import CORPORA, corpus, read_text_file

    if data in CORPORA:
        return corpus(data, split)
    if not Path(data).is_file():
        raise FileNotFoundError(
            f"--data {data!r}: not a packaged corpus ({', '.join(CORPORA)}) and not an existing text file"
        )
    return read_text_file(data)
