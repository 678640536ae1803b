"""``--schedule NAME --schedule-set KEY=VALUE``: build an early-exit or self-speculative schedule from the CLI.

- ``--schedule early-exit --schedule-set measure=max-prob --schedule-set threshold=0.9 --schedule-set min_layer=20``
  (measures: max-prob, margin, entropy, saturation, agreement (with ``count=``); also ``max_pending=`` and
  ``skipped_kv=recompute|propagate``).
- ``--schedule speculative --schedule-set draft_layer=20 --schedule-set k=4`` (layer drafts through ``--lens``), or
  ``--schedule-set skip=15,25`` (skip-layer drafts); also ``adaptive=true``, ``max_k=``.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any

from lenssample.strategies.base import parse_assignments

SCHEDULES = ("early-exit", "speculative")


def add_schedule_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--schedule",
        default=None,
        help=f"compute schedule instead of one pass per token: {', '.join(SCHEDULES)}",
    )
    parser.add_argument(
        "--schedule-set", dest="schedule_params", action="append", default=[], metavar="KEY=VALUE",
        help="schedule parameter, repeatable (e.g. --schedule-set draft_layer=20 --schedule-set k=4)",
    )  # fmt: skip


def _pop_unknown(name: str, params: dict[str, Any], known: set[str]) -> None:
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"--schedule {name}: unknown parameter {key!r}{hint} (known: {', '.join(sorted(known))})"
            )


def schedule_from_args(args: argparse.Namespace) -> Any:
    """The schedule named by ``--schedule`` (``None`` when not given); ``ValueError`` on bad names or parameters."""
    name = getattr(args, "schedule", None)
    params = parse_assignments(getattr(args, "schedule_params", []) or [])
    if name is None:
        if params:
            raise ValueError("--schedule-set needs --schedule early-exit or --schedule speculative")
        return None
    if name == "early-exit":
        from lenssample.strategies.early_exit import MEASURES, EarlyExit

        _pop_unknown(
            name, params, {"measure", "threshold", "count", "min_layer", "max_pending", "skipped_kv"}
        )
        measure_name = params.pop("measure", "max-prob")
        if measure_name not in MEASURES:
            raise ValueError(f"--schedule-set measure={measure_name!r}: choose one of {', '.join(MEASURES)}")
        measure_args = {key: params.pop(key) for key in ("threshold", "count") if key in params}
        try:
            measure = MEASURES[measure_name](**measure_args)
        except TypeError as err:
            raise ValueError(f"--schedule-set for measure {measure_name!r}: {err}") from err
        return EarlyExit(measure=measure, **params)
    if name == "speculative":
        from lenssample.decoding.speculative import LayerDraft, SelfSpeculative, SkipDraft

        _pop_unknown(name, params, {"draft_layer", "skip", "k", "adaptive", "max_k", "lens_cost"})
        if ("draft_layer" in params) == ("skip" in params):
            raise ValueError(
                "--schedule speculative needs exactly one of --schedule-set draft_layer=E or skip=B1,B2"
            )
        if "skip" in params:
            skip = params.pop("skip")
            skip = tuple(int(b) for b in str(skip).split(",")) if not isinstance(skip, int) else (skip,)
            draft = SkipDraft(skip=skip)
        else:
            draft = LayerDraft(layer=params.pop("draft_layer"))
        return SelfSpeculative(draft=draft, **params)
    close = difflib.get_close_matches(str(name), SCHEDULES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"--schedule {name!r} is not a schedule.{hint} Choose one of {', '.join(SCHEDULES)}")
