"""Arguments shared by several subcommands: model, lens, strategy and schedule specs, decoding settings.

Flags that mirror a settings dataclass (``DecodingSettings``, ``TrainConfig``) are derived from its fields by
:func:`add_dataclass_args`, so the command line cannot drift from the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from lenssample.specs import format_spec, parse_assignments, parse_spec


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="embedded model name (default: smollm2-135m-instruct; also gemma3-270m), model folder, .gguf or hub id",
    )
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def add_strategy_args(
    parser: argparse.ArgumentParser, *, default: str = "final", schedule: bool = True
) -> None:
    """``--strategy SPEC`` (``--set KEY=VALUE`` adds parameters) and ``--schedule SPEC``."""
    parser.add_argument(
        "--strategy", default=default, metavar="SPEC",
        help=f"strategy spec, e.g. dola:layers=high,alpha=0.1 (default: {default})",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
        help="a strategy parameter, repeatable (same as writing it in the spec)",
    )  # fmt: skip
    if schedule:
        parser.add_argument(
            "--schedule", default=None, metavar="SPEC",
            help="compute schedule instead of one pass per token, e.g. early-exit:measure=max-prob,threshold=0.9 "
            "or speculative:draft_layer=24,k=3",
        )  # fmt: skip
        parser.add_argument(
            "--schedule-set",
            dest="schedule_params",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=argparse.SUPPRESS,
        )  # deprecated: write it in the spec


def add_lens_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lens", default="logit", help="'logit' (default) or the folder of a saved tuned lens"
    )


def _with_assignments(spec: str, assignments: list[str]) -> str:
    if not assignments:
        return spec
    name, params = parse_spec(spec)
    return format_spec(name, {**params, **parse_assignments(assignments)})


def strategy_from_args(args: argparse.Namespace) -> Any:
    """The strategy of ``--strategy`` and ``--set``, validated (before any model loads)."""
    from lenssample.strategies.base import as_strategy

    return as_strategy(_with_assignments(args.strategy, args.params))


def schedule_from_args(args: argparse.Namespace) -> Any:
    """The schedule of ``--schedule`` (and the deprecated ``--schedule-set``), or ``None``."""
    from lenssample.schedules.base import as_schedule

    if getattr(args, "schedule", None) is None:
        if getattr(args, "schedule_params", None):
            raise ValueError("--schedule-set needs --schedule; write the parameters in the spec, e.g. "
                             "--schedule early-exit:threshold=0.9")  # fmt: skip
        return None
    return as_schedule(_with_assignments(args.schedule, args.schedule_params))


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and tokenizer of ``--model/--dtype/--device`` (and ``--threads``)."""
    import torch

    from lenssample.model.loading import load_model

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: must be >= 1")
        torch.set_num_threads(args.threads)
    return load_model(args.model, dtype=args.dtype, device=args.device)


def lens_from_args(args: argparse.Namespace, model: Any) -> Any:
    """The lens of ``--lens``."""
    from lenssample.lens.tuned import load_lens

    return load_lens(getattr(args, "lens", "logit"), model)


def texts_from_arg(data: str, split: str) -> list:
    """``--data``: a packaged corpus name (its ``split``) or a UTF-8 text file (whole)."""
    from lenssample.data.corpora import CORPORA, corpus, read_text_file

    if data in CORPORA:
        return corpus(data, split)
    if not Path(data).is_file():
        raise FileNotFoundError(
            f"--data {data!r}: not a packaged corpus ({', '.join(CORPORA)}) and not an existing text file"
        )
    return read_text_file(data)


def _flag_type(annotation: Any) -> Any:
    """The argparse type of a dataclass field annotation (``int | None`` -> ``int``; tuples: a list of the item)."""
    hints = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    for hint in hints:
        if hint in (int, float, str, bool):
            return hint
        if typing.get_origin(hint) is tuple:
            return typing.get_args(hint)[0]
    return str


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    names: dict[str, str] | None = None,
) -> None:
    """One ``--field-name`` flag per field of the dataclass ``cls`` (help from ``metadata["help"]``; booleans as
    ``--flag/--no-flag``; tuple fields take several values); defaults stay ``None`` (= the dataclass's own)."""
    names = names or {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = names.get(field.name, "--" + field.name.replace("_", "-"))
        kind = _flag_type(hints[field.name])
        default = field.default if field.default is not dataclasses.MISSING else None
        help_text = f"{field.metadata.get('help', '')} (default: {default})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" in field.metadata:  # after-norm and after_norm alike
                kwargs["choices"] = field.metadata["choices"]
                kwargs["type"] = lambda value: str(value).replace("-", "_")
            origin = typing.get_args(hints[field.name])
            if any(typing.get_origin(a) is tuple for a in origin) or isinstance(
                hints[field.name], types.GenericAlias
            ):
                kwargs["nargs"] = "+"
        parser.add_argument(flag, **kwargs)


def dataclass_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (those left at ``None`` keep the dataclass default)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return values


def dataclass_from_args(args: argparse.Namespace, cls: type, names: dict[str, str] | None = None) -> Any:
    """``cls`` built from its flags; an error names the flag as the user wrote it (``--max-new-tokens 0``)."""
    try:
        return cls(**dataclass_values(args, cls))
    except ValueError as err:
        message = str(err)
        for field in dataclasses.fields(cls):
            flag = (names or {}).get(field.name, "--" + field.name.replace("_", "-"))
            message = message.replace(f"{field.name}=", f"{flag} ")
        raise ValueError(message) from err


def settings_from_args(args: argparse.Namespace) -> Any:
    """The decoding settings of the command line (validated before any model loads)."""
    from lenssample.decoding.settings import DecodingSettings

    return dataclass_from_args(args, DecodingSettings, SETTINGS_FLAGS)


SETTINGS_FLAGS = {"do_sample": "--sample"}
