"""Arguments shared by several subcommands: model, lens, strategy and schedule specs, decoding settings.

Flags that mirror a settings dataclass (``DecodingSettings``, ``TrainConfig``) are derived from its fields by
:func:`add_dataclass_args`, so the command line cannot drift from the Python API.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lenssample.specs import format_spec, parse_assignments, parse_spec

# Dataclass fields whose flag is not ``--field-name``.
SETTINGS_FLAGS = {"do_sample": "--sample"}


def add_model_args(parser: argparse.ArgumentParser, *, lens: bool = True) -> None:
    """``--model/--dtype/--device/--threads/--verify`` and (with ``lens``) ``--lens``."""
    parser.add_argument("--model", default=None, help="embedded model name (default: smollm2-135m-instruct; also "
                        "gemma3-270m), model folder, .gguf or hub id")  # fmt: skip
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--verify", action="store_true", help="check every file of the cached model (and of saved "
                        "lenses) against its manifest's SHA-256 before use, about a second per GB; a damaged "
                        "converted model is rebuilt (every load checks sizes, headers and configs)")  # fmt: skip
    if lens:
        parser.add_argument(
            "--lens", default="logit", help="'logit' (default), 'tuned' (the model's cached tuned lens, saved by "
            "lenssample train-lens) or the folder of a saved tuned lens"
        )


def add_generation_args(parser: argparse.ArgumentParser) -> None:
    """What ``generate`` and ``trace`` share: the prompt, model and lens, ``--strategy SPEC`` (``--set KEY=VALUE``
    adds parameters), ``--schedule SPEC`` and ``--chat``."""
    parser.add_argument("prompt", help="the prompt text")
    add_model_args(parser)
    parser.add_argument("--strategy", default="final", metavar="SPEC",
                        help="strategy spec, e.g. dola:layers=high,alpha=0.1 (default: final)")  # fmt: skip
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="a strategy parameter, repeatable (same as writing it in the spec)")  # fmt: skip
    parser.add_argument("--schedule", default=None, metavar="SPEC", help="compute schedule instead of one pass per "
                        "token, e.g. early-exit:measure=max-prob,threshold=0.9 or speculative:draft_layer=24,k=3")  # fmt: skip
    parser.add_argument("--schedule-set", dest="schedule_params", action="append", default=[], metavar="KEY=VALUE",
                        help=argparse.SUPPRESS)  # deprecated: write it in the spec  # fmt: skip
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")


def _with_assignments(spec: str, assignments: list[str]) -> str:
    if not assignments:
        return spec
    name, params = parse_spec(spec)
    return format_spec(name, {**params, **parse_assignments(assignments)})


def generate_from_args(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Validate the prompt, ``--strategy/--set``, ``--schedule`` and the decoding settings (before the model
    loads), then generate; returns ``(output, strategy, schedule or None, tokenizer)``."""
    from lenssample.api import generate
    from lenssample.decoding.settings import DecodingSettings
    from lenssample.strategies.base import as_strategy

    if not args.prompt:
        raise ValueError("prompt is empty; pass some text")
    strategy, schedule = as_strategy(_with_assignments(args.strategy, args.params)), schedule_from_args(args)
    settings = dataclass_from_args(args, DecodingSettings, SETTINGS_FLAGS)
    model, tokenizer = load(args)
    prompt = args.prompt
    if args.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("--chat: this model's tokenizer has no chat template; drop --chat")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)  # fmt: skip
    with flags_in_errors(DecodingSettings, SETTINGS_FLAGS):
        out = generate(model, prompt, strategy, schedule=schedule, lens=lens_from_args(args, model),
                       tokenizer=tokenizer, settings=settings)  # fmt: skip
    return out, strategy, schedule, tokenizer


def schedule_from_args(args: argparse.Namespace) -> Any:
    """The schedule of ``--schedule`` (and the deprecated ``--schedule-set``), or ``None``."""
    from lenssample.schedules.base import as_schedule

    if args.schedule is None:
        if args.schedule_params:
            raise ValueError("--schedule-set needs --schedule; write the parameters in the spec, e.g. "
                             "--schedule early-exit:threshold=0.9")  # fmt: skip
        return None
    return as_schedule(_with_assignments(args.schedule, args.schedule_params))


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and tokenizer of ``--model/--dtype/--device`` (and ``--threads``)."""
    import torch

    from lenssample.model.loading import load_model, quiet_loading
    from lenssample.validation import check_device, check_threads

    if getattr(args, "threads", None) is not None:
        check_positive(args.threads, "--threads")
        torch.set_num_threads(check_threads(args.threads, field="--threads"))
    check_device(args.device, field="--device")
    check_model_name(args.model)
    with quiet_loading():  # also around what load_model does before from_pretrained (a GGUF conversion)
        return load_model(args.model, dtype=args.dtype, device=args.device, verify=getattr(args, "verify", False))


HUB_HOST = ("huggingface.co", 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds."""
    import socket

    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError:
        return False
    return True


def check_model_name(name: str | None, field: str = "--model") -> None:
    """Fail at once on a ``--model`` that can only come from the hub when the hub cannot be reached (instead of
    transformers' retries, ~25 s); a name that is in the local hub cache then loads from it (offline mode)."""
    import os

    import huggingface_hub.constants
    from huggingface_hub import try_to_load_from_cache

    from lenssample.model.loading import ALIASES, EMBEDDED_MODELS
    from lenssample.validation import did_you_mean

    if name is None or ALIASES.get(name, name) in EMBEDDED_MODELS or name.endswith(".gguf"):
        return
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return  # a local path: the loader says what is wrong with it
    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        if hub_reachable():
            return
        os.environ["HF_HUB_OFFLINE"] = "1"  # no network: never let the loaders retry
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ValueError(
            f"{field} {name!r}: not an embedded model ({known}), a local model folder or a .gguf file, and not in "
            f"the Hugging Face cache; the hub cannot be reached to download it.{did_you_mean(name, EMBEDDED_MODELS)}"
        )


def lens_from_args(args: argparse.Namespace, model: Any) -> Any:
    """The lens of ``--lens``."""
    from lenssample.lens.tuned import load_lens

    return load_lens(getattr(args, "lens", "logit"), model, verify=getattr(args, "verify", False))


def check_positive(value: int, flag: str, low: int = 1) -> None:
    """A ``ValueError`` naming the flag and its value unless ``value >= low``."""
    if value < low:
        raise ValueError(f"{flag} {value}: must be >= {low}")


def add_data_arg(parser: argparse.ArgumentParser, split: str, default: str) -> None:
    """``--data``: a packaged corpus or a text file (see :func:`texts_from_arg`)."""
    parser.add_argument("--data", default=default, help=f"a packaged corpus ({split} split): 'books' (public-domain "
                        f"novels), 'wikipedia' or 'mixed' (both); or a UTF-8 text file (default: {default})")  # fmt: skip


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


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """The argparse type of a dataclass field annotation (``int | None`` -> ``int``; tuples: their item type) and
    whether the flag takes several values (tuple fields)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    several = isinstance(annotation, types.GenericAlias) or any(
        typing.get_origin(a) is tuple for a in options
    )
    for hint in options:
        if hint in (int, float, str, bool):
            return hint, several
        if typing.get_origin(hint) is tuple:
            return typing.get_args(hint)[0], several
    return str, several


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, *, names: dict[str, str] | None = None
) -> None:
    """One ``--field-name`` flag per field of the dataclass ``cls`` (help from ``metadata["help"]``; booleans as
    ``--flag/--no-flag``; tuple fields take several values); defaults stay ``None`` (= the dataclass's own)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": field.name, "default": None,
                                  "help": f"{field.metadata.get('help', '')} (default: {default})"}  # fmt: skip
        kind, several = _flag_type(hints[field.name])
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif "choices" in field.metadata:  # after-norm and after_norm alike
            kwargs.update(choices=field.metadata["choices"], type=lambda value: str(value).replace("-", "_"))
        else:
            kwargs["type"] = kind
        if several:
            kwargs["nargs"] = "+"
        parser.add_argument((names or {}).get(field.name, "--" + field.name.replace("_", "-")), **kwargs)


def dataclass_from_args(args: argparse.Namespace, cls: type, names: dict[str, str] | None = None) -> Any:
    """``cls`` built from its flags (those left at ``None`` keep the dataclass default); an error names the flag as
    the user wrote it (``--max-new-tokens 0``)."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, None)
        if value is not None:
            values[field.name] = tuple(value) if isinstance(value, list) else value
    with flags_in_errors(cls, names):
        return cls(**values)


@contextlib.contextmanager
def flags_in_errors(cls: type, names: dict[str, str] | None = None) -> Iterator[None]:
    """A ``ValueError`` raised inside names the fields of dataclass ``cls`` by their flags (``pad_token_id=7`` ->
    ``--pad-token-id 7``): the checks that need the model (a token id in its vocabulary) run after the flags."""
    try:
        yield
    except ValueError as err:
        message = str(err)
        for field in dataclasses.fields(cls):
            flag = (names or {}).get(field.name, "--" + field.name.replace("_", "-"))
            message = message.replace(f"{field.name}=", f"{flag} ")
        if message == str(err):
            raise
        raise ValueError(message) from err
