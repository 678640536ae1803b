"""Sweep configuration: a TOML file of models x lenses x variants x tasks.

Example (``evals/configs/default.toml`` is a full one)::

    out = "evals/results/default"        # records.jsonl, summary.json, summary.md, plots go here
    models = ["smollm2-135m-instruct"]   # load_model names, folders, or "factory:module:function"
    lenses = ["logit"]                   # "logit", "tuned" (the model's cached tuned lens; trained if missing, see
                                         # tuned_lens below), or a saved tuned-lens folder
    variants = [                         # spec strings, or inline tables (the same spec, with an optional label)
        "final",
        "dola:layers=high",
        "early-exit:measure=max-prob,threshold=0.9",
        { name = "ensemble", label = "ensemble-fitted", fit = { source = "wikipedia:train", max_tokens = 2048 } },
        { name = "speculative", label = "speculative-searched", fit = { new_tokens = 128 } },
        { name = "early-exit", min_layer = 15, label = "exit", models = { "gemma3-270m" = { min_layer = 9 } } },
    ]
    baseline = "final"                   # differences (with bootstrap intervals) are taken against it
    tuned_lens = { data = "mixed", steps = 250 }   # the recipe for lens "tuned" (TrainConfig fields; models = {...})

    [[tasks]]
    name = "wiki"
    kind = "perplexity"                  # perplexity | multiple_choice | generation | speed
    source = "wikipedia:heldout"

A variant is a strategy or a schedule, written in the one spec syntax (:mod:`lenssample.specs`); its label (used in
tables and records) is the string itself unless a table gives ``label``. ``strategies`` is accepted for
``variants``. ``fit`` fits a variant to each model and lens before the tasks run (:mod:`lenssample.eval.runs`): an
ensemble's weights (:func:`~lenssample.strategies.fit.fit_layer_weights` on ``source``), or a speculative schedule's
draft and ``k`` (:func:`~lenssample.schedules.search.choose_self_speculative` on the model's greedy continuation of
``prompt``; plain decoding when no draft is predicted to pay). ``models`` in a table changes parameters for some
models under the same label (layer numbers differ between models). With several lenses, every row of a lens after
the first also carries its difference from the same variant through the first lens (``diff_vs_lens``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from lenssample.data.sets import check_source
from lenssample.lens.formats import looks_like_hub_id
from lenssample.schedules.base import SCHEDULES, Schedule
from lenssample.specs import parse_spec, split_specs
from lenssample.strategies.base import STRATEGIES, FinalLayer, Strategy
from lenssample.validation import (
    check_choice,
    check_int,
    check_number,
    check_output_folder,
    check_threads,
    did_you_mean,
)

TASK_KINDS = ("perplexity", "multiple_choice", "generation", "speed")
TOP_LEVEL = ("out", "models", "lenses", "variants", "strategies", "baseline", "tasks", "seed",
             "bootstrap_resamples", "confidence", "threads", "tuned_lens")  # fmt: skip
FIT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ensemble": {"source": "wikipedia:train", "max_tokens": 2048, "window": 256},
    # prompt None: the speed task's default prompt; layers / skips None: the search's default candidates
    "speculative": {"prompt": None, "new_tokens": 128, "layers": None, "skips": None, "max_k": 8},
}


def split_variant_list(text: str) -> list[str]:
    """``"final,layer:layer=24,dola:layers=2,4"`` -> its variant specs (a part naming a strategy or schedule, or
    ``name:...``, starts a new one)."""
    return split_specs(text, [*STRATEGIES, *SCHEDULES])


@dataclass(frozen=True)
class Variant:
    """One variant of a sweep: a strategy, or a schedule (which decodes from the final layer), with its label.

    ``fit``: how the variant is fitted per model and lens (:data:`FIT_DEFAULTS` filled in), or ``None``.
    """

    label: str
    strategy: Strategy = field(default_factory=FinalLayer)
    schedule: Schedule | None = None
    fit: dict[str, Any] | None = None
    #: ``(model name, variant)`` pairs: the same label with other parameters for that model
    per_model: tuple[tuple[str, Variant], ...] = ()

    @property
    def spec(self) -> Strategy | Schedule:
        return self.schedule or self.strategy

    def for_model(self, model: str) -> Variant:
        """The variant as it runs on ``model``."""
        return dict(self.per_model).get(model, self)


def check_variants(variants: Iterable[Variant], num_layers: int, model_name: str | None = None) -> None:
    """Refuse a variant that cannot run on a model of ``num_layers`` blocks (a layer it does not have, one weight
    per layer of another model, ...), naming the variant (and ``model_name``, whose parameters it then takes), before
    any work."""
    for variant in variants:
        try:
            (variant.for_model(model_name) if model_name else variant).spec.check_model(num_layers)
        except ValueError as err:
            where = f" on model {model_name!r}" if model_name else ""
            raise ValueError(f"variant {variant.label!r}{where}: {err}") from None


def variant_entry(item: str | dict[str, Any]) -> Variant:
    """Build a variant from a spec string or a table (unknown names and fields raise with a "did you mean").

    A table may change parameters for some models under one label: ``{ name = "early-exit", min_layer = 15, label =
    "exit", models = { "gemma3-270m" = { min_layer = 9 } } }``."""
    if isinstance(item, str):
        label, spec, fit, per_model = item.strip(), item, None, {}
        name = parse_spec(item)[0]
    elif isinstance(item, dict):
        spec = dict(item)
        label, fit, per_model = spec.pop("label", None), spec.pop("fit", None), spec.pop("models", {})
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ValueError(f"variant {spec.get('name')!r}: label={label!r} must be a non-empty string; write "
                             "label = 'NAME' or drop it")  # fmt: skip
        name = spec.get("name")
        if fit is not None and name == "speculative" and not {"draft", "draft_layer", "skip"} & set(spec):
            spec["draft_layer"], label = 1, label or name  # a placeholder: the search picks the draft and k
        if not isinstance(per_model, dict) or not all(isinstance(v, dict) for v in per_model.values()):
            raise ValueError(f"variant {label or name!r}: models={per_model!r} must map model names to tables of "
                             "parameters, e.g. models = { \"gemma3-270m\" = { min_layer = 9 } }")  # fmt: skip
    else:
        raise TypeError(f"variant {item!r} must be a spec like 'layer:layer=24' or a table with 'name'")
    built = as_variant((SCHEDULES if name in SCHEDULES else STRATEGIES).build(spec))
    variant = replace(
        built, label=str(label or built.label), fit=None if fit is None else _fit_recipe(fit, built)
    )
    extra = {"label": variant.label, **({"fit": fit} if fit is not None else {})}
    changed = tuple((str(m), variant_entry({**spec, **changes, **extra})) for m, changes in per_model.items())
    return replace(variant, per_model=changed) if changed else variant


def as_variant(item: Any, label: str | None = None) -> Variant:
    """A :class:`Variant` from a variant, a strategy or schedule object, or a spec (string or table)."""
    if isinstance(item, Variant):
        return item
    if isinstance(item, Schedule):
        return Variant(label=label or item.to_spec(), schedule=item)
    if isinstance(item, Strategy):
        return Variant(label=label or item.to_spec(), strategy=item)
    built = variant_entry(item)
    return replace(built, label=label or built.label)


def _fit_recipe(fit: Any, variant: Variant) -> dict[str, Any]:
    defaults = FIT_DEFAULTS.get(variant.spec.name)
    if defaults is None:
        raise ValueError(
            f"fit= applies to {' and '.join(map(repr, FIT_DEFAULTS))} variants; got {variant.spec.to_spec()!r}"
        )
    if not isinstance(fit, dict):
        raise ValueError(f"fit={fit!r} must be a table, e.g. fit = {{ source = 'wikipedia:train' }}")
    for key in fit:
        check_choice(key, defaults, field="fit key")
    recipe = {**defaults, **fit}
    if "source" in recipe:  # the fitting text, checked before anything runs
        check_source(recipe["source"], "perplexity")
    for key, low in (("max_tokens", 1), ("window", 8), ("new_tokens", 2), ("max_k", 1)):
        if key in recipe:
            check_int(recipe[key], field=f"fit.{key}", low=low)
    return recipe


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
    variants: tuple[Variant, ...]
    tasks: tuple[TaskSpec, ...]
    baseline: str
    seed: int = 0
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    threads: int | None = None
    #: how the lens named ``"tuned"`` is trained for a model that has none cached (see :func:`tuned_lens_recipe`)
    tuned_lens: dict[str, Any] = field(default_factory=dict)
    #: the models and lenses this run evaluates (``None``: all); the summary always covers the whole sweep
    stage_models: tuple[str, ...] | None = None
    stage_lenses: tuple[str, ...] | None = None

    def staged(self, models: Iterable[str] | None = None, lenses: Iterable[str] | None = None) -> SweepConfig:
        """This sweep with only ``models`` and ``lenses`` (each a subset of the config's, ``None``: all of them; a
        string is one name) evaluated by the next run: one stage of a long sweep, resumed into the same results
        folder."""
        picks = {}
        for key, given, allowed in (("models", models, self.models), ("lenses", lenses, self.lenses)):
            if given is None:
                continue
            given = tuple(dict.fromkeys([given] if isinstance(given, str) else given))
            if not given:
                raise ValueError(f"--{key} names nothing; name some of the config's {key}: {', '.join(allowed)}")
            for name in given:
                if name not in allowed:
                    raise ValueError(f"--{key} {name!r} is not one of the config's {key} ({', '.join(allowed)})."
                                     f"{did_you_mean(name, allowed)} Add it to the config's {key} list to run it.")  # fmt: skip
            picks[f"stage_{key}"] = tuple(name for name in allowed if name in given)  # in the config's order
        return replace(self, **picks)

    @property
    def run_models(self) -> tuple[str, ...]:
        """The models this run evaluates (:meth:`staged`)."""
        return self.models if self.stage_models is None else self.stage_models

    @property
    def run_lenses(self) -> tuple[str, ...]:
        """The lenses this run evaluates (:meth:`staged`)."""
        return self.lenses if self.stage_lenses is None else self.stage_lenses


def tuned_lens_recipe(table: Any, model: str | None = None) -> tuple[str, Any]:
    """``(corpus, TrainConfig)`` from a config's ``tuned_lens`` table: ``data`` (a packaged corpus, default
    ``"mixed"``), any :class:`~lenssample.lens.train.TrainConfig` field, and ``models = { NAME = { field = value } }``
    for one model's changes (``{ "gemma3-270m" = { steps = 100 } }``)."""
    from lenssample.data.corpora import CORPORA
    from lenssample.lens.train import TrainConfig

    if not isinstance(table, dict):
        raise ValueError(f"tuned_lens={table!r} must be a table, e.g. tuned_lens = {{ steps = 250 }}")
    per_model = table.get("models", {})
    if not isinstance(per_model, dict) or not all(isinstance(v, dict) for v in per_model.values()):
        raise ValueError(f"tuned_lens.models={per_model!r} must map model names to tables of TrainConfig fields")
    fields_ = {k: v for k, v in table.items() if k not in ("data", "models")} | per_model.get(model, {})
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in fields_:
        check_choice(key, names, field="tuned_lens key")
    corpus = check_choice(table.get("data", "mixed"), CORPORA, field="tuned_lens.data")
    try:
        return corpus, TrainConfig(**fields_)
    except (TypeError, ValueError) as err:
        raise ValueError(f"tuned_lens: {err}") from None


def _require_list(
    raw: dict[str, Any], key: str, default: list | None = None, *, strings: bool = False
) -> list:
    value = raw.get(key, default)
    if value is None:
        raise ValueError(f"the config needs '{key}' (a list)")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{key}' must be a non-empty list, got {value!r}")
    for item in value if strings else ():
        if not isinstance(item, str) or not item:
            raise ValueError(
                f"'{key}' holds {item!r}; write names or paths as strings, e.g. {default or ['x']!r}"
            )
    return value


def _distinct(values: list[str], key: str) -> tuple[str, ...]:
    """``values`` as a tuple; a repeated entry (which would run, and report, everything twice) is refused."""
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise ValueError(f"'{key}' lists {repeated!r} twice, got {values}; list each once")
    return tuple(values)


def _task_name(name: Any, number: int) -> str:
    """A task's name: a non-empty string that can be part of a file name (``bars_<task>.png``)."""
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\\0") or name in (".", ".."):
        raise ValueError(
            f"task #{number}: name={name!r} must be a non-empty string without '/' or '\\' (it names the task's "
            "records and plot files); write e.g. name = \"wiki-ppl\""
        )
    return name


def _check_lens_entry(lens: str) -> None:
    """A ``lenses`` entry: ``"logit"``, ``"tuned"``, a tuned-lens folder, or a hub id (``owner/name``)."""
    path = Path(lens).expanduser()
    hub_id = "/" in lens and looks_like_hub_id(lens)  # owner/name; a path otherwise (a bare name is a typo here)
    if lens in ("logit", "tuned") or path.is_dir() or (hub_id and not path.exists()):
        return
    if path.exists():
        problem = "is a file, not a lens folder"
    else:
        problem = "is a folder that does not exist" if "/" in lens or lens.startswith(("~", ".")) else "is not a lens"
    raise ValueError(
        f"lenses holds {lens!r}, which {problem}; write 'logit', 'tuned', a saved tuned-lens folder or a "
        f"hub id (owner/name).{did_you_mean(lens, ('logit', 'tuned'))}"
    )


def parse_config(raw: dict[str, Any]) -> SweepConfig:
    """Validate a config dictionary (from TOML); every error names the key and what to write instead."""
    for key in raw:
        check_choice(key, TOP_LEVEL, field="config key")
    if "variants" in raw and "strategies" in raw:
        raise ValueError(
            "the config gives both 'variants' and 'strategies'; they are the same list: keep one"
        )
    key = "strategies" if "strategies" in raw else "variants"
    variants = tuple(variant_entry(item) for item in _require_list(raw, key))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must be distinct, got {labels}; add 'label' to the duplicates")
    baseline = raw.get("baseline", labels[0])
    if baseline not in labels:
        raise ValueError(
            f"baseline={baseline!r} is not one of the variants {labels}.{did_you_mean(baseline, labels)}"
        )
    tasks = []
    for number, table in enumerate(_require_list(raw, "tasks"), start=1):
        if not isinstance(table, dict) or "kind" not in table:
            raise ValueError(f"task #{number} needs a 'kind' (one of {', '.join(TASK_KINDS)})")
        params = dict(table)
        kind = check_choice(params.pop("kind"), TASK_KINDS, field="kind", owner=f"task #{number}")
        tasks.append(TaskSpec(name=_task_name(params.pop("name", kind), number), kind=kind, params=params))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be distinct, got {names}; give each task a 'name'")
    threads, out = raw.get("threads"), raw.get("out", "evals/results/run")
    if not isinstance(out, str) or not out:
        raise ValueError(f"out={out!r} must be a folder path (a string), e.g. out = 'evals/results/run'")
    models = _distinct(_require_list(raw, "models", ["smollm2-135m-instruct"], strings=True), "models")
    lenses = _distinct(_require_list(raw, "lenses", ["logit"], strings=True), "lenses")
    for lens in lenses:
        _check_lens_entry(lens)
    tuned = raw.get("tuned_lens", {})
    for model in (None, *models):  # every model's recipe is valid before anything runs
        tuned_lens_recipe(tuned, model)
    return SweepConfig(
        out=Path(out),
        models=models,
        lenses=lenses,
        variants=variants,
        tasks=tuple(tasks),
        baseline=baseline,
        seed=check_int(raw.get("seed", 0), field="seed", low=0),
        bootstrap_resamples=check_int(
            raw.get("bootstrap_resamples", 2000), field="bootstrap_resamples", low=10
        ),
        confidence=check_number(
            raw.get("confidence", 0.95),
            field="confidence",
            low=0.5,
            high=1.0,
            low_open=True,
            high_open=True,
            fix="Write a level such as 0.95.",
        ),  # fmt: skip
        threads=None if threads is None else check_threads(check_int(threads, field="threads", low=1)),
        tuned_lens=tuned,
    )


def load_config(path: str | Path, *, out: str | Path | None = None) -> SweepConfig:
    """Read and validate a TOML sweep file; relative ``out`` is taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder; pass the .toml file in it" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"config file {str(path)!r} {problem}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # -sig: a BOM (Windows editors) is not TOML
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from err
    if out is not None:
        raw["out"] = str(out)
    config = parse_config(raw)
    check_output_folder(config.out, field="results folder (the config's out, or --out)")  # before any work, so that no result is lost at the end
    return config
