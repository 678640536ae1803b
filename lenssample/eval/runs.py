"""Run a sweep (models x lenses x strategies x tasks): per-item records with resume, then the summary.

    from lenssample.eval.config import load_config
    from lenssample.eval.runs import run_sweep
    summary = run_sweep(load_config("evals/configs/default.toml"))

Each finished item is appended to ``OUT/records.jsonl`` (``records.rankR.jsonl`` per process when sharded, see
:mod:`lenssample.eval.distributed`); a rerun skips the items already recorded. The summary (``summary.json``,
``summary.md``, plots) is rebuilt from the records alone, so an interrupted-and-resumed run, or a sharded one, gives
the same summary as one uninterrupted process.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lenssample.api import generate
from lenssample.data.corpora import corpus
from lenssample.data.sets import documents
from lenssample.eval import speed
from lenssample.eval.config import SweepConfig, Variant, check_variants, tuned_lens_recipe
from lenssample.eval.records import read_records, record_key, record_writer
from lenssample.eval.report import summarize, write_reports
from lenssample.eval.tasks import Context, SpeedTask, build_task, scoring_strategy
from lenssample.lens.base import as_lens
from lenssample.lens.train import trained_lens
from lenssample.lens.tuned import TunedLens, default_lens_path, load_lens
from lenssample.model.loading import load_model
from lenssample.schedules.base import SCHEDULES
from lenssample.schedules.search import choose_self_speculative
from lenssample.strategies.base import STRATEGIES
from lenssample.strategies.fit import fit_layer_weights
from lenssample.validation import check_output_folder

Loader = Callable[[str], tuple[Any, Any]]


def load_by_name(name: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a config's model entry: a :func:`lenssample.load_model` name or path, or
    ``factory:package.module:function`` (a function of no arguments returning ``(model, tokenizer)``)."""
    if name.startswith("factory:"):
        module, sep, func = name[len("factory:") :].rpartition(":")
        if not sep:
            raise ValueError(f"model {name!r}: write factory:package.module:function")
        return getattr(importlib.import_module(module), func)()
    return load_model(None if name in ("default", "") else name)


def sweep_lens(spec: str, model: Any, tokenizer: Any, model_name: str, recipe: dict[str, Any]) -> Any:
    """The lens a config names; ``"tuned"`` is the model's cached tuned lens (:func:`default_lens_path`), trained
    with the config's ``tuned_lens`` recipe and saved there first when there is none."""
    if spec != "tuned":
        return load_lens(spec, model)
    path = default_lens_path(model_name)
    if path.is_dir():
        return TunedLens.load(path, model)
    data, settings = tuned_lens_recipe(recipe, model_name)
    print(f"lens 'tuned': no tuned lens for {model_name} at {path}; training one on {data} ({settings.steps} "
          "KL steps; resumable)", file=sys.stderr)  # fmt: skip
    return trained_lens(path, model, corpus(data, "train"), settings, tokenizer=tokenizer, data=data)


def lens_version(lens: Any, model_name: str, lens_spec: str, records: list[dict[str, Any]]) -> dict[str, str]:
    """``{"lens_version": fingerprint}`` for a tuned lens (recorded with every record it produces, see
    :meth:`TunedLens.fingerprint`), ``{}`` for the logit lens; warns when earlier records of this model and lens
    came from another version (a resumed sweep would mix them: delete those records to keep one version)."""
    if not isinstance(lens, TunedLens):
        return {}
    version = lens.fingerprint()
    others = Counter(r.get("lens_version") for r in records if r["model"] == model_name and r["lens"] == lens_spec
                     and r.get("lens_version") not in (None, version))  # fmt: skip
    if others:
        found = ", ".join(f"{v} ({n} records)" for v, n in others.items())
        print(f"warning: lens {lens_spec!r} of {model_name} is version {version}, but earlier records came from "
              f"{found}; the new records will be compared with them item by item as usual, but delete the old "
              "records (or restore that lens) to keep one version", file=sys.stderr)  # fmt: skip
    return {"lens_version": version}


def fitted_variant(variant: Variant, ctx: Context, out: Path, model_name: str, lens_spec: str) -> Variant:
    """A variant with ``fit`` fitted to this model and lens (see :mod:`lenssample.eval.config`): read from
    ``OUT/fitted/`` or fitted (and saved, with the fit's figures or the search's table) once."""
    if variant.fit is None:
        return variant
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model_name}--{lens_spec}--{variant.label}")
    path = out / "fitted" / f"{safe}.json"
    if path.is_file():
        record = json.loads(path.read_text(encoding="utf-8"))
    else:
        record = {
            "fit": variant.fit,
            **(_search(variant, ctx) if variant.schedule else _fit_weights(variant, ctx)),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if "schedule" in record:  # null: the search predicts no draft to pay, so the variant decodes plainly
        return Variant(variant.label, schedule=record["schedule"] and SCHEDULES.build(record["schedule"]))
    return Variant(variant.label, strategy=STRATEGIES.build(record["strategy"]))


def _fit_weights(variant: Variant, ctx: Context) -> dict[str, Any]:
    fit = variant.fit
    result = fit_layer_weights(ctx.model, ctx.tokenizer, documents(fit["source"]), layers=variant.strategy.layers.spec,
                               lens=ctx.lens, max_tokens=fit["max_tokens"], window=fit["window"])  # fmt: skip
    return {"strategy": result.strategy.to_dict(), "nll": result.nll, "final_nll": result.final_nll,
            "tokens": result.tokens}  # fmt: skip


def _search(variant: Variant, ctx: Context) -> dict[str, Any]:
    fit = variant.fit
    ids = speed.prompt_ids(
        ctx.tokenizer, fit["prompt"] or speed.DEFAULT_PROMPT, next(ctx.model.parameters()).device
    )
    sample = generate(ctx.model, ids, max_new_tokens=fit["new_tokens"], eos_token_id=[]).sequences
    choice = choose_self_speculative(ctx.model, sample, lens=ctx.lens, layers=fit["layers"], skips=fit["skips"],
                                     max_k=fit["max_k"], lens_cost=variant.schedule.lens_cost)  # fmt: skip
    return {"schedule": choice.schedule and choice.schedule.to_dict(), "predicted_speedup": choice.predicted_speedup,
            "table": choice.table}  # fmt: skip


def run_sweep(
    config: SweepConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    loader: Loader = load_by_name,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    barrier: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Evaluate every missing item (of the stage's models and lenses, :meth:`SweepConfig.staged`); then (on rank 0)
    write and return the summary of every record of the sweep.

    ``rank, world_size``: this process's shard (items ``rank::world_size`` of each task; speed runs on rank 0);
    ``loader``: ``name -> (model, tokenizer)``; ``on_record``: called after each record is written (tests use it to
    interrupt a run); ``barrier``: called before rank 0 summarises (``torch.distributed.barrier`` when sharded).
    """
    tasks = [build_task(spec) for spec in config.tasks]  # validates every task before anything runs
    if config.threads:
        torch.set_num_threads(int(config.threads))
    out = check_output_folder(config.out, field="results folder (the config's out, or --out)")
    out.mkdir(parents=True, exist_ok=True)
    loaded = {}  # every variant is checked against every model before any work (one extra load per extra model)
    for model_name in config.run_models:
        pair = loader(model_name)
        check_variants(config.variants, as_lens(pair[0], None).num_layers, model_name)
        if not loaded:
            loaded[model_name] = pair
    existing = read_records(out)
    done = {record_key(r) for r in existing}
    name = "records.jsonl" if world_size == 1 else f"records.rank{rank}.jsonl"
    with record_writer(out / name) as write:

        def emit(record: dict[str, Any]) -> None:
            write(record)
            done.add(record_key(record))
            if on_record is not None:
                on_record(record)

        for model_name in config.run_models:
            model, tokenizer = loaded.pop(model_name, None) or loader(model_name)
            for lens_spec in config.run_lenses:
                lens = sweep_lens(lens_spec, model, tokenizer, model_name, config.tuned_lens)
                ctx = Context(model=model, tokenizer=tokenizer, lens=lens)
                base = {"model": model_name, "lens": lens_spec, **lens_version(lens, model_name, lens_spec, existing)}
                variants = [fitted_variant(v.for_model(model_name), ctx, out, model_name, lens_spec)
                            for v in config.variants]  # fmt: skip
                for task in tasks:
                    if isinstance(task, SpeedTask):
                        if rank == 0:
                            _run_speed(task, ctx, variants, base, done, emit, progress)
                        continue
                    items = task.items(ctx)[rank::world_size]
                    if task.teacher_forced:
                        _run_scored(task, ctx, items, variants, {**base, "task": task.name}, done, emit, progress)
                        continue
                    for entry in variants:
                        head = {**base, "task": task.name, "strategy": entry.label}
                        todo = [(i, p) for i, p in items if record_key({**head, "item": i}) not in done]
                        bar = tqdm(
                            todo, desc=f"{task.name} / {entry.label}", disable=not progress, leave=False
                        )
                        for item_id, payload in bar:
                            emit({**head, "item": item_id, **task.evaluate(ctx, payload, entry)})
    if barrier is not None:
        barrier()
    if rank != 0:
        return None
    summary = summarize(config, read_records(out))
    write_reports(config, summary)
    return summary


def _run_scored(task, ctx: Context, items: list, variants: list[Variant], head: dict, done: set, emit,
                progress: bool) -> None:  # fmt: skip
    """A teacher-forced task: item by item, every variant that has a teacher-forced distribution scored together
    (schedules without one are evaluated on generation and speed only); the records missing are written."""
    scored = [variant for variant in variants if scoring_strategy(variant) is not None]
    keys = [[{**head, "strategy": v.label, "item": item_id} for v in scored] for item_id, _ in items]
    todo = [(item, heads) for item, heads in zip(items, keys) if any(record_key(h) not in done for h in heads)]
    bar = tqdm(todo, desc=f"{head['task']} ({len(scored)} variants)", disable=not progress, leave=False)
    for (_, payload), heads in bar:
        for key, record in zip(heads, task.evaluate_many(ctx, payload, scored)):
            if record_key(key) not in done:
                emit({**key, **record})


def _run_speed(
    task: SpeedTask, ctx: Context, variants: list[Variant], base: dict, done: set, emit, progress
) -> None:
    by_label, options = {v.label: v for v in variants}, task.options
    flags = ("include_hf", "custom_generate", "compiled", "hf_compiled")
    labels = speed.runner_labels(by_label, **{key: options[key] for key in flags})
    head = {**base, "task": task.name}
    if all(record_key({**head, "strategy": label, "item": "bench"}) in done for label in labels):
        return
    result = speed.bench(ctx.model, ctx.tokenizer, by_label, lens=ctx.lens, prompt=task.prompt or speed.DEFAULT_PROMPT,
                         progress=progress, **options)  # fmt: skip
    machine = {key: result[key] for key in ("threads", "batch", "weight_bytes", "read_bandwidth_gb_s",
                                            "floor_ms_per_token") if key in result}  # fmt: skip
    for label, figures in result["variants"].items():
        record = {**head, "strategy": label, "item": "bench", **figures, **machine}
        if record_key(record) not in done:
            emit(record)
