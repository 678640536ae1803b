"""Reproduce the logit-lens observations (nostalgebraist, 2020) on the shipped models, logit and tuned lens.

    python evals/observations/run.py [--config evals/observations/config.toml] [--out evals/observations]

Writes ``results.json`` (every per-layer number), ``report.md`` (tables and a verdict per observation, each verdict
computed from the numbers by the rules in :func:`verdicts`) and figures into the output folder. The observations:

1. Lens distributions converge toward the final one with depth, often getting close well before the last layer.
2. Nonsense, then shallow guesses (frequent tokens), then good guesses.
3. Only the inputs look like the inputs: after the embedding, the current input token is discarded almost at once
   (the original post expected a U-shape and did not find it).
4. What a tuned lens changes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch

from lenssample.analysis.layer_stats import LayerStatistics, frequent_tokens, layer_statistics
from lenssample.data import wikipedia
from lenssample.data.windows import token_windows
from lenssample.lens.base import LogitLens
from lenssample.lens.tuned import load_lens

HERE = Path(__file__).resolve().parent
SUMMARY = ("kl", "agree_final", "next_top1", "frequent", "input_top1", "entropy")


def tokenized_windows(tokenizer: Any, n_tokens: int, window: int) -> list[torch.Tensor]:
    """Windows of ``window`` predicting positions (``window + 1`` tokens; shorter remainders of at least 32 kept)
    from the held-out articles, ``n_tokens`` positions in all (:func:`lenssample.data.windows.token_windows`)."""
    ids = [tokenizer(doc.text, return_tensors="pt").input_ids[0] for doc in wikipedia("heldout")]
    return token_windows(ids, None, seq_len=window + 1, min_len=32, max_positions=n_tokens)


def summarize(stats: LayerStatistics) -> dict[str, Any]:
    """Per-layer means (and medians of ranks), plus the first layers reaching 50% / 80% agreement."""
    out: dict[str, Any] = {"layers": list(stats.layers), "n_positions": int(stats.values["kl"].shape[0])}
    for name in SUMMARY:
        if name in stats.values:
            out[name] = [round(float(v), 4) for v in stats.mean(name)]
    for name in ("next_rank", "input_rank"):
        out[f"{name}_median"] = [float(v) for v in stats.median(name)]
    out["first_layer_agree_50"] = stats.first_layer_reaching("agree_final", 0.5)
    out["first_layer_agree_80"] = stats.first_layer_reaching("agree_final", 0.8)
    return out


def _thirds(values: list[float], num_layers: int) -> tuple[float, float, float]:
    """Means over the early (1..L/3), middle and late (..L-1) layers; the embedding and final layer excluded."""
    cuts = [1, 1 + (num_layers - 1) // 3, 1 + 2 * (num_layers - 1) // 3, num_layers]
    return tuple(float(np.mean(values[a:b])) for a, b in zip(cuts[:-1], cuts[1:]))  # type: ignore[return-value]


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A verdict (holds / holds partly / does not hold) and its evidence per observation, by fixed rules."""
    num_layers = summary["layers"][-1]
    kl = summary["kl"]
    first50, first80 = summary["first_layer_agree_50"], summary["first_layer_agree_80"]
    late_kl_trend = float(
        np.corrcoef(np.arange(num_layers // 2, num_layers), kl[num_layers // 2 : num_layers])[0, 1]
    )
    if first50 is not None and first50 <= 0.75 * num_layers and late_kl_trend < -0.5:
        v1 = "holds"
    elif first50 is not None and first50 < num_layers:
        v1 = "holds partly"
    else:
        v1 = "does not hold"
    e1 = (
        f"top-1 agreement with the final layer first reaches 50% at layer {first50} and 80% at layer {first80} "
        f"of {num_layers}; KL(final||lens) at layers L/4, L/2, 3L/4, L-1: "
        f"{kl[num_layers // 4]:.2f}, {kl[num_layers // 2]:.2f}, {kl[3 * num_layers // 4]:.2f}, {kl[num_layers - 1]:.2f} "
        f"nats (correlation of KL with depth over the second half: {late_kl_trend:.2f})"
    )
    ranks = _thirds(summary["next_rank_median"], num_layers)
    freq = _thirds(summary["frequent"], num_layers)
    top1 = _thirds(summary["next_top1"], num_layers)
    rank_falls = ranks[0] >= ranks[1] >= ranks[2] and ranks[0] > ranks[2]
    shallow_middle = freq[1] > freq[0]
    v2 = (
        "holds"
        if rank_falls and shallow_middle
        else "holds partly"
        if rank_falls or shallow_middle
        else "does not hold"
    )
    e2 = (
        f"median rank of the actual next token, early/middle/late thirds: {ranks[0]:.0f} / {ranks[1]:.0f} / "
        f"{ranks[2]:.0f}; share of top-1 tokens among the corpus's most frequent tokens: {freq[0]:.2f} / "
        f"{freq[1]:.2f} / {freq[2]:.2f}; next-token top-1 accuracy: {top1[0]:.2f} / {top1[1]:.2f} / {top1[2]:.2f}"
    )
    copy = summary["input_top1"]
    after = copy[1 : num_layers + 1]
    gone_at = next((i + 1 for i, v in enumerate(after) if v < 0.1), None)
    late_copy = float(np.mean(copy[1 + 2 * (num_layers - 1) // 3 : num_layers]))
    if gone_at is not None and gone_at <= 2:
        v3 = "holds"
    elif gone_at is not None and gone_at <= num_layers // 3:
        v3 = "holds partly"
    else:
        v3 = "does not hold"
    e3 = (
        f"top-1 is the current input token at layer 0: {copy[0]:.2f}, layer 1: {copy[1]:.2f}, layer 2: {copy[2]:.2f}; "
        f"first layer below 10%: {gone_at}; mean over the late third: {late_copy:.2f} "
        f"({'a late rise: U-shape' if late_copy > 2 * min(after) + 0.05 else 'no late rise: no U-shape'}); "
        f"median rank of the input token at layers 1, L/2, L: {summary['input_rank_median'][1]:.0f}, "
        f"{summary['input_rank_median'][num_layers // 2]:.0f}, {summary['input_rank_median'][num_layers]:.0f}"
    )
    return {
        "1 convergence": {"verdict": v1, "evidence": e1},
        "2 nonsense -> shallow -> good guesses": {"verdict": v2, "evidence": e2},
        "3 only the inputs look like the inputs": {"verdict": v3, "evidence": e3},
    }


def compare_lenses(logit: dict[str, Any], tuned: dict[str, Any]) -> dict[str, str]:
    """Observation 4: what the tuned lens changes, in numbers."""
    num_layers = logit["layers"][-1]
    mid = list(range(num_layers // 3, 2 * num_layers // 3 + 1))
    kl_ratio = float(np.mean([tuned["kl"][i] / max(logit["kl"][i], 1e-9) for i in mid]))
    return {
        "verdict": "the tuned lens changes the picture"
        if kl_ratio < 0.5
        else "the tuned lens changes little",
        "evidence": (
            f"mean KL ratio tuned/logit over layers {mid[0]}..{mid[-1]}: {kl_ratio:.2f}; first layer with 50% "
            f"agreement: logit {logit['first_layer_agree_50']}, tuned {tuned['first_layer_agree_50']}; 80%: logit "
            f"{logit['first_layer_agree_80']}, tuned {tuned['first_layer_agree_80']}; input-copying at layer 1: "
            f"logit {logit['input_top1'][1]:.2f}, tuned {tuned['input_top1'][1]:.2f}"
        ),
    }


def lenses_for(model: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The logit lens, and the tuned lens when its folder exists."""
    lenses = {"logit": LogitLens(model)}
    folder = Path(str(spec.get("tuned_lens", ""))).expanduser()
    if spec.get("tuned_lens") and (folder / "config.json").exists():
        lenses["tuned"] = load_lens(folder, model)
    return lenses


def plot_curves(results: dict[str, Any], out: Path) -> list[str]:
    """One figure per model: KL, agreement, next-token top-1, frequent share and input copying per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model_name, per_lens in results["models"].items():
        panels = [("kl", "KL(final || lens), nats"), ("agree_final", "top-1 = final top-1"),
                  ("next_top1", "top-1 = actual next token"), ("frequent", "top-1 among frequent tokens"),
                  ("input_top1", "top-1 = current input token")]  # fmt: skip
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
        for ax, (key, title) in zip(axes, panels):
            for lens_name, summary in per_lens["lenses"].items():
                ax.plot(summary["layers"], summary[key], marker=".", label=lens_name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("layer")
            if key == "kl":
                ax.set_yscale("symlog")
        axes[0].legend()
        fig.suptitle(f"{model_name}: logit-lens observations on held-out Wikipedia text", fontsize=10)
        fig.tight_layout()
        path = out / f"curves_{model_name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def plot_heatmaps(config: dict[str, Any], out: Path, *, model_override: Any = None) -> dict[str, list[str]]:
    """One logit-lens heatmap (and one tuned-lens heatmap when a tuned lens exists) per model, on a sample passage:
    the first ``sample_chars`` characters of the first held-out article."""
    from lenssample.analysis.trajectory import trajectory
    from lenssample.model.loading import load_model
    from lenssample.plotting.figures import plot_trajectory

    passage = wikipedia("heldout")[0].text[: int(config.get("sample_chars", 120))]
    written: dict[str, list[str]] = {}
    for spec in config["models"]:
        model, tokenizer = model_override if model_override is not None else load_model(spec["name"])
        for lens_name, lens in lenses_for(model, spec).items():
            traj = trajectory(model, tokenizer, passage, lens=lens)
            path = out / f"heatmap_{spec['name']}_{lens_name}.png"
            plot_trajectory(traj, stat="prob", max_positions=24, path=path,
                            title=f"{spec['name']}, {lens_name} lens: top-1 token per layer (colour: its probability)")  # fmt: skip
            written.setdefault(spec["name"], []).append(path.name)
    return written


def render_report(results: dict[str, Any]) -> str:
    lines = ["# Logit-lens observations on the shipped models", "",
             "Produced by `python evals/observations/run.py` from `evals/observations/config.toml`; every number "
             "below is in `results.json`. Text: held-out English Wikipedia articles (`lenssample.data`). Layer 0 "
             "is the embedding output, L the final layer.", ""]  # fmt: skip
    for model_name, per_lens in results["models"].items():
        lines += [f"## {model_name}", "", f"{per_lens['num_layers']} layers; {per_lens['n_positions']} positions; "
                  f"lenses: {', '.join(per_lens['lenses'])}; {per_lens['seconds']:.0f} s.", ""]  # fmt: skip
        for lens_name, verdict in per_lens["verdicts"].items():
            lines += [f"### {lens_name} lens", ""]
            for obs, item in verdict.items():
                lines.append(f"- **Observation {obs}: {item['verdict']}.** {item['evidence']}.")
            lines.append("")
        if "tuned_vs_logit" in per_lens:
            item = per_lens["tuned_vs_logit"]
            made = per_lens.get("tuned_lens", {})
            # lenses made before train-lens recorded its --data were all trained on Wikipedia
            command = f"lenssample train-lens --model {model_name} --data {made.get('data', 'wikipedia')}" + (
                f" --steps {made['steps']}" if "steps" in made else ""
            )
            record = ", ".join(f"{k} {v}" for k, v in made.items())
            lines += [f"- **Observation 4 (tuned lens): {item['verdict']}.** {item['evidence']}.",
                      f"  (Tuned lens made by `{command}`: {record}.)", ""]  # fmt: skip
        for lens_name, summary in per_lens["lenses"].items():
            lines += [f"Per layer, {lens_name} lens:", "",
                      "| layer | KL | agree final | next top-1 | next rank (median) | frequent | input top-1 | input rank (median) |",
                      "|---|---|---|---|---|---|---|---|"]  # fmt: skip
            for i, layer in enumerate(summary["layers"]):
                lines.append(
                    f"| {layer} | {summary['kl'][i]:.2f} | {summary['agree_final'][i]:.2f} | "
                    f"{summary['next_top1'][i]:.2f} | {summary['next_rank_median'][i]:.0f} | "
                    f"{summary['frequent'][i]:.2f} | {summary['input_top1'][i]:.2f} | "
                    f"{summary['input_rank_median'][i]:.0f} |"
                )
            lines.append("")
        for figure in per_lens.get("figures", []):
            lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines)


def run(config: dict[str, Any], out: Path, *, model_override: Any = None) -> dict[str, Any]:
    """Compute everything for every model in ``config``; ``model_override`` = ``(model, tokenizer)`` for tests."""
    from lenssample.model.loading import load_model

    results: dict[str, Any] = {"config": config, "models": {}}
    for spec in config["models"]:
        start = time.perf_counter()
        model, tokenizer = model_override if model_override is not None else load_model(spec["name"])
        windows = tokenized_windows(tokenizer, int(config["n_tokens"]), int(config["window"]))
        if not windows:
            raise ValueError("the corpus gave no text to score")
        frequent = frequent_tokens(windows, int(config["n_frequent"]))
        per_lens: dict[str, Any] = {"lenses": {}, "verdicts": {}}
        lenses = lenses_for(model, spec)
        for lens_name, lens in lenses.items():
            stats = LayerStatistics.concatenate(
                [layer_statistics(model, w, lens=lens, frequent=frequent) for w in windows]
            )
            summary = summarize(stats)
            per_lens["lenses"][lens_name] = summary
            per_lens["verdicts"][lens_name] = verdicts(summary)
        tuned = lenses.get("tuned")
        if tuned is not None:  # how the lens was made, so a reader can retrain it (the lens is not committed)
            record = tuned.training_info
            per_lens["tuned_lens"] = {"placement": tuned.placement} | {
                key: record[key]
                for key in ("data", "steps", "train_tokens", "lr", "batch_positions", "wall_seconds")
                if key in record
            }
            per_lens["tuned_vs_logit"] = compare_lenses(
                per_lens["lenses"]["logit"], per_lens["lenses"]["tuned"]
            )
        per_lens["num_layers"] = per_lens["lenses"]["logit"]["layers"][-1]
        per_lens["n_positions"] = per_lens["lenses"]["logit"]["n_positions"]
        per_lens["seconds"] = round(time.perf_counter() - start, 1)
        results["models"][spec["name"]] = per_lens
    out.mkdir(parents=True, exist_ok=True)
    figures = plot_curves(results, out)
    heatmaps = plot_heatmaps(config, out, model_override=model_override)
    for model_name, figure in zip(results["models"], figures):
        results["models"][model_name]["figures"] = [figure, *heatmaps.get(model_name, [])]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "report.md").write_text(render_report(results) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(HERE / "config.toml"))
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument(
        "--heatmaps-only",
        action="store_true",
        help="only redraw the heatmaps and add them to an existing report",
    )
    args = parser.parse_args()
    config = tomllib.loads(Path(args.config).read_text())
    if args.heatmaps_only:
        out = Path(args.out)
        results = json.loads((out / "results.json").read_text())
        for model_name, names in plot_heatmaps(config, out).items():
            figures = results["models"][model_name].setdefault("figures", [])
            figures[:] = [f for f in figures if not f.startswith("heatmap_")] + names
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "report.md").write_text(render_report(results) + "\n")
        return
    results = run(config, Path(args.out))
    for model_name, per_lens in results["models"].items():
        for lens_name, verdict in per_lens["verdicts"].items():
            for obs, item in verdict.items():
                print(f"{model_name} [{lens_name}] observation {obs}: {item['verdict']}")


if __name__ == "__main__":
    main()
