"""The leaderboard view of a sweep's summary: a verdict per variant x task x model x lens, one headline table per
model, a tally of verdicts per variant, and a Pareto plot per model (each task's headline quality vs ms/token).

Verdicts follow fixed rules from the paired bootstrap interval of the difference from the baseline (same model,
lens and items; :func:`lenssample.eval.report.summarize`): **better** when the interval excludes zero on the good
side, **worse** when it excludes zero on the bad side, **no detectable difference** otherwise. Which side is good:
lower for NLL per token (perplexity) and repetition rate, higher for accuracies, MC1/2/3, exact match and
containment; generation length has no good side. Speed is reported with the range of its timed rounds, no verdict.
An interval of NLL per token inside ``±ROUND_OFF`` nats is float round-off (the same distribution computed along
another path, e.g. the tuned lens's identity at the last layer), not a difference: no detectable difference.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: the good direction of each paired metric (+1: higher is better); metrics not listed get no verdict
DIRECTION = {"nll_per_token": -1, "repetition_rate": -1, "acc": 1, "acc_norm": 1, "mc1": 1, "mc2": 1, "mc3": 1,
             "exact_match": 1, "contains": 1}  # fmt: skip
MARKS = {"better": "▲", "worse": "▼", "no detectable difference": "=", None: ""}
#: nats per token below which a difference in NLL is float32 round-off (a real one is orders of magnitude larger)
ROUND_OFF = 1e-4


def verdict(key: str, interval: dict[str, Any]) -> str | None:
    """``"better"``, ``"worse"``, ``"no detectable difference"``, or ``None`` (no direction, or no interval)."""
    direction, low, high = DIRECTION.get(key), interval.get("low"), interval.get("high")
    if direction is None or low is None or high is None:
        return None
    if key == "nll_per_token" and max(abs(low), abs(high)) < ROUND_OFF:
        return "no detectable difference"
    if low > 0 or high < 0:
        return "better" if (1 if low > 0 else -1) == direction else "worse"
    return "no detectable difference"


def headline(row: dict[str, Any], diff: str = "diff_vs_baseline") -> tuple[str, float | None, dict[str, Any]]:
    """``(metric, value, interval)`` shown for a summary row: perplexity (its interval and verdict on the NLL per
    token), the multiple-choice task's ``headline`` metric (default accuracy), exact match where there are
    references else the repetition rate, ms/token for speed (no interval); ``diff`` names the comparison."""
    metrics, kind = row["metrics"], row["kind"]
    if kind == "perplexity":
        key, paired = "perplexity", "nll_per_token"
    elif kind == "multiple_choice":
        key = paired = row.get("headline", "acc")
    elif kind == "generation":
        key = paired = "exact_match" if metrics.get("exact_match") is not None else "repetition_rate"
    else:
        return "ms_per_token", metrics.get("ms_per_token"), {}
    return key, metrics.get(key), (row.get(diff) or {}).get(paired) or {}


def _cell(row: dict[str, Any], items: int | None = None) -> str:
    """The headline value, its verdict mark and, when the row has fewer items than the baseline's ``items`` (a
    partial run), its own count."""
    key, value, interval = headline(row)
    result = interval.get("verdict")
    if value is None:
        return "–"
    text = f"{value:.3g}" if key in ("perplexity", "ms_per_token") else f"{value:.3f}"
    metrics = row["metrics"]
    if key == "perplexity" and metrics.get("excluded_fraction"):
        text += f" (kept {metrics['perplexity_kept']:.3g}, {metrics['excluded_fraction']:.0%} excl.)"
        if row.get("floor") is not None:
            text = text[:-1] + f", floor {row['floor']:g})"
    runs = metrics.get("runs_ms_per_token")
    if key == "ms_per_token" and runs:
        text += f" [{min(runs):.3g}–{max(runs):.3g}]"
    if items is not None and row.get("items", items) != items:
        text += f" (n={row['items']})"
    return f"{text} {MARKS[result]}".strip()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x and lower y are better)."""
    return [i for i, (x, y) in enumerate(points)
            if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for x2, y2 in points)]  # fmt: skip


def markdown(summary: dict[str, Any], title: str = "Leaderboard") -> str:
    """One table per model (rows: variant x lens; columns: tasks) and the tally of verdicts per variant."""
    rows = summary["rows"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    lines = [f"## {title}", "",
             f"Cells: the task's headline metric and its verdict against `{summary['baseline']}` with the same model and "
             f"lens ({summary['confidence']:.0%} paired bootstrap, {summary['bootstrap_resamples']} resamples): ▲ better, "
             "= no detectable difference, ▼ worse. Perplexity charges each token a strategy excludes the floor "
             "log-probability named in the cell; (kept …) is over the tokens it keeps. ms/token: median [range over timed rounds].", ""]  # fmt: skip
    tally: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for model in dict.fromkeys(r["model"] for r in rows):
        cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for row in rows:
            if row["model"] == model:
                base = [r for r in rows if r["model"] == model and r["task"] == row["task"]
                        and r["strategy"] == summary["baseline"] and r["lens"] == row["lens"]]  # fmt: skip
                cells[(row["strategy"], row["lens"])][row["task"]] = _cell(row, base[0]["items"] if base else None)
                if (result := headline(row)[2].get("verdict")) is not None:
                    tally[(row["strategy"], row["lens"])][result] += 1
        metrics = {t: headline(next(r for r in rows if r["task"] == t and r["model"] == model))[0] for t in tasks
                   if any(r["task"] == t and r["model"] == model for r in rows)}  # fmt: skip
        lines += [f"### `{model}`", "", "| variant | lens | " + " | ".join(f"{t} ({metrics[t]})" for t in metrics)
                  + " |", "|---|---|" + "---|" * len(metrics)]  # fmt: skip
        for (strategy, lens), by_task in cells.items():
            lines.append(f"| `{strategy}` | {lens} | " + " | ".join(by_task.get(t, "–") for t in metrics) + " |")
        lines.append("")
    lines += ["### Verdicts per variant (all models and tasks)", "",
              "| variant | lens | better | no detectable difference | worse |", "|---|---|---|---|---|"]  # fmt: skip
    for (strategy, lens), counts in tally.items():
        if strategy != summary["baseline"]:
            lines.append(f"| `{strategy}` | {lens} | {counts['better']} | {counts['no detectable difference']} | "
                         f"{counts['worse']} |")  # fmt: skip
    if versions := summary.get("lens_versions"):
        lines += ["", "### Tuned-lens versions in the records", "",
                  "Each record of a tuned lens names the lens that made it (`lens_version`, a fingerprint of its "
                  "weights); \"unrecorded\": written before versions were recorded. More than one version means the "
                  "records mix lenses: rerun with one lens to compare like with like.", ""]  # fmt: skip
        lines += [f"- {key}: " + ", ".join(f"`{v}` ({n} records)" for v, n in found.items())
                  for key, found in versions.items()]  # fmt: skip
    lens_rows = [r for r in rows if r.get("diff_vs_lens") and headline(r, "diff_vs_lens")[2]]
    if lens_rows:
        lines += ["", f"### The same variant through the {lens_rows[0]['lens']} lens vs the "
                  f"{lens_rows[0]['diff_vs_lens']['lens']} lens", "",
                  "| model | variant | task | metric | difference [CI] | verdict |", "|---|---|---|---|---|---|"]  # fmt: skip
        for row in lens_rows:
            key, _, ci = headline(row, "diff_vs_lens")
            span = f"[{ci['low']:+.3g}, {ci['high']:+.3g}]" if ci.get("low") is not None else "(no interval)"
            lines.append(f"| `{row['model']}` | `{row['strategy']}` | {row['task']} | "
                         f"{'NLL/token' if key == 'perplexity' else key} | {ci['diff']:+.3g} {span} | "
                         f"{ci.get('verdict') or '–'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_pareto(summary: dict[str, Any], out) -> list[str]:
    """``pareto_<model>.png``: per quality task, its headline metric vs ms/token (the speed task of the same model
    and lens), logit-lens and tuned-lens variants in two colours, the Pareto front ringed; returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, written = summary["rows"], []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        ms = {(r["lens"], r["strategy"]): r["metrics"].get("ms_per_token") for r in mine if r["kind"] == "speed"}
        tasks = [t for t in dict.fromkeys(r["task"] for r in mine if r["kind"] != "speed")
                 if any(ms.get((r["lens"], r["strategy"])) for r in mine if r["task"] == t)]  # fmt: skip
        if not tasks:
            continue
        columns = min(3, len(tasks))
        fig, axes = plt.subplots((len(tasks) + columns - 1) // columns, columns, squeeze=False,
                                 figsize=(5.2 * columns, 4.2 * ((len(tasks) + columns - 1) // columns)))  # fmt: skip
        for ax, task in zip(axes.flat, tasks, strict=False):
            points = []
            for row in mine:
                key, value, _ = headline(row)
                x = ms.get((row["lens"], row["strategy"]))
                if row["task"] == task and value is not None and x:
                    points.append((x, value, row["strategy"], row["lens"], key))
            sign = 1 if points[0][4] in ("perplexity", "repetition_rate") else -1  # the front minimises both axes
            front = set(pareto_front([(x, sign * y) for x, y, *_ in points]))
            for i, (x, y, label, lens, _) in enumerate(points):
                ax.scatter([x], [y], color="tab:orange" if lens == "tuned" else "tab:blue", s=18,
                           edgecolors="black" if i in front else "none", linewidths=1.2)  # fmt: skip
                ax.annotate(label, (x, y), fontsize=5.5, xytext=(2, 2), textcoords="offset points")
            key = points[0][4]
            ax.set(xlabel="ms / token", ylabel=key, yscale="log" if key == "perplexity" else "linear")
            ax.set_title(f"{task}: {key} vs speed", fontsize=9)
        for ax in list(axes.flat)[len(tasks):]:
            ax.axis("off")
        fig.suptitle(f"{model} (blue: logit lens, orange: tuned lens; ringed: Pareto front)", fontsize=10)
        fig.tight_layout()
        name = f"pareto_{model.replace('/', '--')}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written
