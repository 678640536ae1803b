"""Summaries of a sweep's records: metrics per (model, lens, task, strategy), bootstrap confidence intervals on
every difference from the baseline strategy, a markdown table, and plots (matplotlib, Agg backend).

Intervals: ``scipy.stats.bootstrap`` with ``paired=True`` over the items both strategies were evaluated on, the
percentile method (BCa breaks down when a difference is identically zero), a fixed seed. For perplexity the
statistic is the difference in NLL per token, a ratio of sums over windows (``(sum nll_s - sum nll_b) / sum
tokens``), so the windows are resampled as units; its interval maps to a perplexity ratio by ``exp``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats

from lenssample.eval import leaderboard
from lenssample.eval.config import SweepConfig
from lenssample.eval.leaderboard import pareto_front, verdict
from lenssample.eval.tasks import SpeedTask, build_task
from lenssample.plotting.figures import plot_bars

SPEED_KEYS = ("ms_per_token", "tokens_per_s", "ttft_ms", "speedup_vs_final", "ratio_to_floor", "compile_seconds",
              "blocks_per_token", "mean_exit_layer",
              "mean_propagated", "mean_premature_layer", "acceptance_rate", "accepted", "drafted", "accept_histogram",
              "plain_steps", "identical_to_final", "full_model_nll", "full_model_agreement", "peak_memory_mb",
              "runs_ms_per_token")  # fmt: skip


def _interval(statistic, arrays: list[np.ndarray], config: SweepConfig) -> dict[str, float | None]:
    value = float(statistic(*arrays, axis=-1))
    if len(arrays[0]) < 2:
        return {"diff": value, "low": None, "high": None}
    result = stats.bootstrap(tuple(arrays), statistic, paired=True, vectorized=True,
                             n_resamples=config.bootstrap_resamples, confidence_level=config.confidence,
                             method="percentile", rng=np.random.default_rng(config.seed))  # fmt: skip
    low, high = result.confidence_interval
    return {"diff": value, "low": float(low), "high": float(high)}


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def summarize(config: SweepConfig, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary dictionary (JSON-ready) of the records of a sweep."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["model"], record["lens"], record["task"], record["strategy"])].append(record)
    rows = []
    labels = [v.label for v in config.variants]
    for model in config.models:
        for lens in config.lenses:
            for spec in config.tasks:
                task = build_task(spec)
                head = {"model": model, "lens": lens, "task": task.name, "kind": task.kind,
                        **{key: getattr(task, key) for key in ("headline", "floor") if hasattr(task, key)}}  # fmt: skip
                if isinstance(task, SpeedTask):  # one record per variant; the timing baselines come last
                    compiled = [f"{label} compiled" for label in [*labels, "final"]]  # compiled = true
                    timing = ["final_custom_generate", "hf_generate", "hf_generate_compiled"]
                    for label in dict.fromkeys([*labels, "final", *compiled, *timing]):
                        for rec in groups.get((model, lens, task.name, label), [])[:1]:
                            metrics = {k: _nan_to_none(rec[k]) for k in SPEED_KEYS if rec.get(k) is not None}
                            ratios = {k: rec[k] for k in rec if k.startswith("ratio_to_")}
                            rows.append({**head, "strategy": label, "items": 1, "metrics": metrics | ratios})
                    continue
                base_records = {
                    r["item"]: r for r in groups.get((model, lens, task.name, config.baseline), [])
                }
                for label in labels:
                    mine = groups.get((model, lens, task.name, label))
                    if not mine:
                        continue
                    metrics = {k: _nan_to_none(v) for k, v in task.summarize(mine).items()}
                    row = {**head, "strategy": label, "items": len(mine), "metrics": metrics}
                    if label != config.baseline and base_records:
                        row["diff_vs_baseline"] = _differences(task, mine, base_records, config)
                    first = groups.get((model, config.lenses[0], task.name, label))
                    if lens != config.lenses[0] and first:  # the same variant through the first lens
                        row["diff_vs_lens"] = {"lens": config.lenses[0],
                                               **_differences(task, mine, {r["item"]: r for r in first}, config)}  # fmt: skip
                    rows.append(row)
    return {"baseline": config.baseline, "confidence": config.confidence,
            "bootstrap_resamples": config.bootstrap_resamples, "rows": rows,
            "lens_versions": lens_versions(config, records)}  # fmt: skip


def lens_versions(config: SweepConfig, records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{"model / lens": {version: records}}`` for every (model, lens) of the config with a recorded lens version
    (tuned lenses; ``"unrecorded"`` counts records written before versions were recorded)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    versioned = {(r["model"], r["lens"]) for r in records if r.get("lens_version")}
    for record in records:
        if (record["model"], record["lens"]) in versioned and record["model"] in config.models:
            counts[f"{record['model']} / {record['lens']}"][record.get("lens_version") or "unrecorded"] += 1
    return {key: dict(value) for key, value in counts.items()}


def _differences(
    task, mine: list[dict], base_records: dict[str, dict], config: SweepConfig
) -> dict[str, Any]:
    paired = [r for r in mine if r["item"] in base_records]
    if not paired:
        return {}
    ours = task.paired_values(paired)
    theirs = task.paired_values([base_records[r["item"]] for r in paired])
    out: dict[str, Any] = {"paired_items": len(paired)}
    if task.per_token:  # the difference in NLL per token, a ratio of sums over windows
        ci = _interval(lambda a, b, t, axis=-1: (a.sum(axis=axis) - b.sum(axis=axis)) / t.sum(axis=axis),
                       [ours["nll"], theirs["nll"], ours["tokens"]], config)  # fmt: skip
        ratio = {k: (math.exp(v) if v is not None else None) for k, v in ci.items()}
        return {**out, "nll_per_token": {**ci, "verdict": verdict("nll_per_token", ci)}, "perplexity_ratio": ratio}
    for key in ours:
        ci = _interval(lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis), [ours[key], theirs[key]], config)
        out[key] = {**ci, "verdict": verdict(key, ci)}
    return out


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


MAIN_METRICS = {
    "perplexity": [
        "perplexity",
        "perplexity_kept",
        "excluded_fraction",
        "nll_per_token",
        "bits_per_byte",
        "tokens",
    ],
    "multiple_choice": ["acc", "acc_norm", "mc1", "mc2", "mc3", "items"],
    "generation": ["exact_match", "contains", "repetition_rate", "distinct_2", "mean_length", "items"],
    "speed": [key for key in SPEED_KEYS if key != "runs_ms_per_token"],
}


def markdown(summary: dict[str, Any]) -> str:
    """One table per (model, lens, task); differences from the baseline with their bootstrap interval."""
    lines = [
        f"Baseline: `{summary['baseline']}`; intervals: {summary['confidence']:.0%} paired bootstrap.",
        "",
    ]
    tables: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in summary["rows"]:
        tables[(row["model"], row["lens"], row["task"])].append(row)
    for (model, lens, task), rows in tables.items():
        kind = rows[0]["kind"]
        keys = [k for k in MAIN_METRICS[kind] if any(k in r["metrics"] for r in rows)]
        bases = [b for b in ("final", "hf_generate", "final compiled")
                 if any(f"ratio_to_{b}" in r["metrics"] for r in rows)]  # fmt: skip
        extra = [f"x {b}" for b in bases] if kind == "speed" else ["Δ vs baseline [CI]"]
        lines += [f"### {task} ({kind}) — model `{model}`, lens `{lens}`", "",
                  "| strategy | " + " | ".join(keys + extra) + " |", "|" + "---|" * (len(keys) + len(extra) + 1)]  # fmt: skip
        for row in rows:
            cells = [_fmt(row["metrics"].get(k)) for k in keys]
            if kind == "speed":
                for base in bases:
                    ratio = row["metrics"].get(f"ratio_to_{base}") or {}
                    cells.append(_fmt(ratio.get("ms_per_token")))
            else:
                cells.append(_diff_cell(row.get("diff_vs_baseline")))
            lines.append(f"| `{row['strategy']}` | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _diff_cell(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "(baseline)"
    parts = []
    for key, ci in diff.items():
        if key in ("paired_items", "perplexity_ratio") or not isinstance(ci, dict):
            continue
        low, high = ci["low"], ci["high"]
        # one paired item has no spread to resample: say so instead of leaving the interval out silently
        span = f" [{low:+.3g}, {high:+.3g}]" if low is not None else " [no interval: 1 item]"
        parts.append(f"{key} {ci['diff']:+.3g}{span} {leaderboard.MARKS[ci.get('verdict')]}".rstrip())
    return "; ".join(parts)


def write_reports(config: SweepConfig, summary: dict[str, Any]) -> None:
    """``summary.json``, ``summary.md``, ``leaderboard.md`` and the plots in ``config.out``."""
    out = config.out
    (out / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(markdown(summary) + "\n", encoding="utf-8")
    (out / "leaderboard.md").write_text(leaderboard.markdown(summary), encoding="utf-8")
    plot(summary, out)
    leaderboard.plot_pareto(summary, out)


def plot(summary: dict[str, Any], out) -> list[str]:
    """``bars_<task>.png``, ``pareto.png`` (perplexity vs ms/token) and ``pareto_quality.png`` (the full model's NLL
    of what each variant generated vs ms/token, from a speed task with ``quality = true``); returns the files
    written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written, rows = [], summary["rows"]

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    for task, task_rows in by_task.items():
        kind = task_rows[0]["kind"]
        # the first main metric present, e.g. repetition_rate for free generation, which has no reference answers
        present = [k for k in MAIN_METRICS[kind] if any(r["metrics"].get(k) is not None for r in task_rows)]
        if not present:
            continue
        key = present[0]
        several_lenses = len({r["lens"] for r in task_rows}) > 1
        values = [(f"{r['strategy']}\n{r['lens']}" if several_lenses else r["strategy"], r["metrics"][key])
                  for r in task_rows if r["metrics"].get(key) is not None]  # fmt: skip
        # a log axis when values span orders of magnitude (final's perplexity 24 beside a contrast's 1e6)
        plot_bars(dict(values), ylabel=key, title=f"{task} ({kind})", path=out / f"bars_{task}.png")
        written.append(f"bars_{task}.png")
    ms = {_variant(r): r["metrics"].get("ms_per_token") for r in rows if r["kind"] == "speed"}
    pareto = (("perplexity", "pareto.png", "perplexity"), ("speed", "pareto_quality.png", "full_model_nll"))
    for kind, name, ylabel in pareto:
        found = [
            (ms.get(_variant(r)), r["metrics"].get(ylabel), r["strategy"]) for r in rows if r["kind"] == kind
        ]
        found = [point for point in found if point[0] and point[1] is not None]
        if not found:
            continue
        small = len(found) <= 8
        fig, ax = plt.subplots(figsize=(5, 3.6) if small else (9, 6))
        front = set(pareto_front([(x, y) for x, y, _ in found]))
        for i, (x, y, label) in enumerate(found):
            ax.scatter([x], [y], color="tab:red" if i in front else "tab:gray")
            ax.annotate(label, (x, y), fontsize=7 if small else 6, xytext=(3, 3), textcoords="offset points")
        ax.set(
            xlabel="ms / token (median)", ylabel=ylabel, yscale="log" if kind == "perplexity" else "linear"
        )
        ax.set_title(f"{ylabel} vs speed (red: Pareto front)", fontsize=9)
        save(fig, name)
    return written


def _variant(row: dict[str, Any]) -> tuple[str, str, str]:
    return row["model"], row["lens"], row["strategy"]
