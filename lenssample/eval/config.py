"""Sweep configuration: a TOML file of models x lenses x strategies x tasks.

Example (``evals/configs/default.toml`` is a full one)::

    out = "evals/results/default"        # records.jsonl, summary.json, summary.md, plots go here
    models = ["smollm2-135m-instruct"]   # load_model names, folders, or "factory:module:function"
    lenses = ["logit"]                   # "logit" or a saved tuned-lens folder
    strategies = ["final", "layer:layer=24"]   # or [[strategies]] tables: {name = "layer", layer = 24}
    baseline = "final"                   # differences (with bootstrap intervals) are taken against it

    [[tasks]]
    name = "wiki"
    kind = "perplexity"                  # perplexity | multiple_choice | generation | speed
    source = "wikipedia:heldout"
    window = 512
    stride = 256
    max_tokens = 4096

A strategy string is ``name`` or ``name:key=value:key=value`` (values parsed like ``--set``); its label (used in
tables) is the string itself unless a table gives ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from lenssample.strategies.base import Strategy, _did_you_mean, parse_value

TASK_KINDS = ("perplexity", "multiple_choice", "generation", "speed")
TOP_LEVEL = (
    "out",
    "models",
    "lenses",
    "strategies",
    "baseline",
    "tasks",
    "seed",
    "bootstrap_resamples",
    "confidence",
    "threads",
)


def split_strategy_list(text: str) -> list[str]:
    """``"final,layer:layer=24,dola:layers=[2,4]"`` -> its strategy strings (commas inside brackets kept)."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def parse_strategy(text: str) -> dict[str, Any]:
    """``"layer:layer=24"`` -> ``{"name": "layer", "layer": 24}``."""
    name, *assignments = text.split(":")
    spec: dict[str, Any] = {"name": name.strip()}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"strategy {text!r}: {item!r} is not key=value; write e.g. 'layer:layer=24'")
        spec[key.strip()] = parse_value(value.strip())
    return spec


@dataclass(frozen=True)
class StrategyEntry:
    """A strategy of the sweep with its table label."""

    label: str
    strategy: Strategy


def strategy_entry(item: str | dict[str, Any]) -> StrategyEntry:
    """Build a strategy from a string or a table (unknown names and fields raise with a "did you mean")."""
    if isinstance(item, str):
        return StrategyEntry(label=item, strategy=Strategy.from_dict(parse_strategy(item)))
    if isinstance(item, dict):
        spec = dict(item)
        label = spec.pop("label", None)
        strategy = Strategy.from_dict(spec)
        if label is None:
            params = ":".join(f"{k}={v}" for k, v in spec.items() if k != "name")
            label = spec["name"] + (f":{params}" if params else "")
        return StrategyEntry(label=str(label), strategy=strategy)
    raise TypeError(f"strategy entry {item!r} must be a string like 'layer:layer=24' or a table with 'name'")


@dataclass(frozen=True)
class TaskSpec:
    """One task of the sweep: ``name`` (unique label), ``kind`` and its parameters."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep."""

    out: Path
    models: tuple[str, ...]
    lenses: tuple[str, ...]
    strategies: tuple[StrategyEntry, ...]
    tasks: tuple[TaskSpec, ...]
    baseline: str
    seed: int = 0
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    threads: int | None = None


def _require_list(raw: dict[str, Any], key: str, default: list | None = None) -> list:
    value = raw.get(key, default)
    if value is None:
        raise ValueError(f"the config needs '{key}' (a list)")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{key}' must be a non-empty list, got {value!r}")
    return value


def parse_config(raw: dict[str, Any], *, base_dir: Path | None = None) -> SweepConfig:
    """Validate a config dictionary (from TOML); every error names the key and what to write instead."""
    for key in raw:
        if key not in TOP_LEVEL:
            raise ValueError(
                f"config key {key!r} is not known.{_did_you_mean(key, TOP_LEVEL)} Keys: {', '.join(TOP_LEVEL)}"
            )
    strategies = tuple(strategy_entry(item) for item in _require_list(raw, "strategies"))
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"strategy labels must be distinct, got {labels}; add 'label' to the duplicates")
    baseline = raw.get("baseline", labels[0])
    if baseline not in labels:
        raise ValueError(
            f"baseline={baseline!r} is not one of the strategies.{_did_you_mean(baseline, labels)}"
        )
    tasks = []
    for number, table in enumerate(_require_list(raw, "tasks"), start=1):
        if not isinstance(table, dict) or "kind" not in table:
            raise ValueError(f"task #{number} needs a 'kind' (one of {', '.join(TASK_KINDS)})")
        params = dict(table)
        kind = params.pop("kind")
        if kind not in TASK_KINDS:
            raise ValueError(
                f"task #{number}: kind={kind!r} is not known.{_did_you_mean(kind, TASK_KINDS)} "
                f"Known: {', '.join(TASK_KINDS)}"
            )
        name = str(params.pop("name", kind))
        tasks.append(TaskSpec(name=name, kind=kind, params=params))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {names}; give each task a 'name'")
    out = Path(raw.get("out", "evals/results/run"))
    if base_dir is not None and not out.is_absolute():
        out = base_dir / out
    return SweepConfig(
        out=out,
        models=tuple(map(str, _require_list(raw, "models", ["smollm2-135m-instruct"]))),
        lenses=tuple(map(str, _require_list(raw, "lenses", ["logit"]))),
        strategies=strategies,
        tasks=tuple(tasks),
        baseline=baseline,
        seed=int(raw.get("seed", 0)),
        bootstrap_resamples=int(raw.get("bootstrap_resamples", 2000)),
        confidence=float(raw.get("confidence", 0.95)),
        threads=raw.get("threads"),
    )


def load_config(path: str | Path, *, out: str | Path | None = None) -> SweepConfig:
    """Read and validate a TOML sweep file; relative ``out`` is taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
    if out is not None:
        raw["out"] = str(out)
    return parse_config(raw)
