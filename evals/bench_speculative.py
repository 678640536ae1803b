"""Self-speculative decoding and early exit on the default model, side by side with greedy decoding.

Batch 1, greedy, ``--new-tokens`` tokens (EOS ignored), one chat prompt. Variants run round-robin, in alternating order
(after a short warm-up) and the report gives medians and ratios to greedy *of the same round*, so a shared, noisy machine affects
all variants alike.

Self-speculative (lossless): the search (:func:`choose_self_speculative`) on the model's own greedy text picks a
draft and ``k``; besides its choice, fixed layer drafts and skip-layer drafts are timed, and tuned-lens layer
drafts when ``--tuned-lens DIR`` is given. Each run's tokens are checked to equal greedy's.

Early exit (lossy): for several max-prob and saturation thresholds, and both ways of filling the skipped layers'
keys/values (``skipped_kv="recompute"``, the default, and CALM's ``"propagate"``): time per token, blocks per token
and quality. Quality cannot be the perplexity of ``lenssample.score`` (a teacher-forced score of one fixed strategy,
while early exit's layer depends on each step's confidence), so it is measured on what early exit generates: the full
model's negative log-likelihood per token of the early-exit text (lower is better; greedy's own text is the
reference) and the fraction of steps where the early-exit token equals the full model's argmax given the same
prefix.

    python evals/bench_speculative.py --out evals/results/speculative.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import lenssample
from lenssample.schedules.early_exit import SKIPPED_KV, EarlyExit, MaxProb, Saturation
from lenssample.schedules.search import choose_self_speculative
from lenssample.schedules.speculative import LayerDraft, SelfSpeculative, SkipDraft

PROMPT = "Explain, step by step, how a bill becomes a law in the United States."


def full_model_quality(model, prompt_len: int, sequences: torch.Tensor) -> dict:
    """NLL per generated token under the full model, and agreement of each token with the full model's argmax."""
    with torch.inference_mode():
        logits = model(sequences).logits[0, prompt_len - 1 : -1].float()
    targets = sequences[0, prompt_len:]
    log_probs = torch.log_softmax(logits, -1)
    nll = -log_probs[torch.arange(len(targets)), targets].mean()
    agree = (logits.argmax(-1) == targets).float().mean()
    return {"full_model_nll": float(nll), "full_model_argmax_agreement": float(agree)}


def markdown(record: dict, argv: str) -> str:
    """The results as markdown tables (timed variants, then each lens's search)."""

    def cell(value, fmt="{:.2f}") -> str:
        return "" if value is None else fmt.format(value)

    lines = [
        f"# Self-speculative decoding and early exit on {record['model']} ({record['num_layers']} layers)",
        "",
        f"`python evals/bench_speculative.py {argv}`: batch 1, greedy, {record['new_tokens']} new tokens, "
        f"{record['rounds_completed']} timed round(s) in alternating order after a warm-up; speed-up = greedy "
        "time / variant time within a round, median over rounds. NLL = the full model's negative log-likelihood "
        "per generated token; agreement = how often a token is the full model's argmax.",
        "",
        "| variant | ms/token | speed-up | identical to greedy | blocks/token | mean exit layer | acceptance "
        "| accept histogram | NLL/token | agreement |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in record["results"].items():
        acceptance = ""
        if "acceptance_rate" in row:
            acceptance = f"{row['acceptance_rate']:.2f} ({row['accepted']}/{row['drafted']})"
        lines.append(
            f"| {name} | {row['ms_per_token_median']:.1f} | {row['speedup_vs_greedy_median']:.2f} | "
            f"{row['identical_to_greedy']} | {cell(row.get('blocks_per_token'), '{:.1f}')} | "
            f"{cell(row.get('mean_exit_layer'), '{:.1f}')} | {acceptance} | {row.get('accept_histogram', '')} | "
            f"{cell(row.get('full_model_nll'), '{:.3f}')} | {cell(row.get('full_model_argmax_agreement'))} |"
        )
    for lens_name, search in record["searches"].items():
        lines += ["", f"Search ({lens_name} lens): chosen {json.dumps(search['chosen'])} (null = plain decoding), "
                  f"predicted speed-up {search['predicted_speedup']:.2f}.", "",
                  "| draft | acceptance | best k | predicted speed-up |", "|---|---|---|---|"]  # fmt: skip
        for row in search["table"]:
            lines.append(
                f"| {row.get('draft')} | {cell(row.get('acceptance'))} | {row.get('best_k', '')} | "
                f"{cell(row.get('predicted_speedup'))} |"
            )
    return "\n".join(lines) + "\n"


def plot_early_exit(record: dict, path: Path) -> Path:
    """The early-exit curve: speed-up vs quality (full-model NLL per token) per measure and key/value option."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float, float, str]]] = {}
    for name, row in record["results"].items():
        if not name.startswith("early_exit_"):
            continue
        parts = name.removeprefix("early_exit_").split("_")  # measure, threshold, [kv], [lens]
        measure, threshold = parts[0], parts[1]
        kv = "propagate" if "propagate" in parts else "recompute"
        label = f"{measure}, {kv}" + (", tuned lens" if "tuned" in parts else "")
        point = (row["speedup_vs_greedy_median"], row["full_model_nll"], row["blocks_per_token"], threshold)
        series.setdefault(label, []).append(point)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, points in sorted(series.items()):
        points.sort(key=lambda p: p[0])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        for speed, nll, blocks, threshold in points:
            ax.annotate(f"{threshold} ({blocks:.0f}b)", (speed, nll), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    greedy = record["results"]["greedy"]
    ax.scatter([1.0], [greedy["full_model_nll"]], marker="*", s=150, color="black", zorder=5, label="greedy")
    ax.axvline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("speed-up vs greedy (median of rounds)")
    ax.set_ylabel("full-model NLL per generated token")
    ax.set_title(f"Early exit on {record['model']}: threshold (blocks/token) per point", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up round")
    parser.add_argument(
        "--tuned-lens", default=None, help="folder of a saved tuned lens (adds tuned-lens drafts)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="evals/results/speculative.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = lenssample.load_model(args.model)
    L = lenssample.model.adapters.model_parts(model).num_layers
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(chat, return_tensors="pt").input_ids
    n = args.new_tokens
    greedy_seq = lenssample.generate(model, ids, max_new_tokens=n, eos_token_id=[]).sequences

    lenses = {"logit": lenssample.LogitLens(model)}
    if args.tuned_lens:
        from lenssample.lens.tuned import TunedLens

        lenses["tuned"] = TunedLens.load(args.tuned_lens, model)

    # The search, on the model's own continuation of the prompt (its generation is what drafts must match).
    searches, chosen_schedules = {}, {}
    for name, lens in lenses.items():
        choice = choose_self_speculative(model, greedy_seq, lens=lens)
        chosen_schedules[name] = choice.schedule
        searches[name] = {
            "chosen": choice.schedule.to_dict() if choice.schedule else None,
            "predicted_speedup": choice.predicted_speedup,
            "table": choice.table,
        }
        print(
            f"search ({name} lens):", json.dumps(searches[name]["chosen"]), f"{choice.predicted_speedup:.2f}"
        )
        for row in choice.table:
            print("   ", row)

    variants: dict[str, Callable[[], lenssample.GenerateOutput]] = {}

    def add(name: str, **kw) -> None:
        variants[name] = lambda: lenssample.generate(model, ids, max_new_tokens=n, eos_token_id=[], **kw)

    add("greedy")
    for lens_name, lens in lenses.items():
        for layer, k in ((L - 2, 3),):
            add(
                f"spec_{lens_name}_E{layer}_k{k}",
                lens=lens,
                schedule=SelfSpeculative(draft=LayerDraft(layer=layer), k=k),
            )
        add(
            f"spec_{lens_name}_E{L - 2}_adaptive", lens=lens,
            schedule=SelfSpeculative(draft=LayerDraft(layer=L - 2), k=4, adaptive=True),
        )  # fmt: skip
        chosen = chosen_schedules[lens_name]
        if chosen is not None:
            add(f"spec_{lens_name}_search_choice", lens=lens, schedule=chosen)
        else:
            print(
                f"search ({lens_name} lens): no draft predicted to pay -> plain decoding (not timed separately)"
            )
    add("spec_skip_15_k4", schedule=SelfSpeculative(draft=SkipDraft(skip=(15,)), k=4))
    add(
        "spec_skip_upper_alt_k3",
        schedule=SelfSpeculative(draft=SkipDraft(skip=tuple(range(16, L - 1, 4))), k=3),
    )
    for threshold in (0.5, 0.7, 0.9, 0.99):
        add(
            f"early_exit_maxprob_{threshold}",
            schedule=EarlyExit(measure=MaxProb(threshold=threshold), min_layer=L // 2),
        )
        add(
            f"early_exit_maxprob_{threshold}_propagate",
            schedule=EarlyExit(
                measure=MaxProb(threshold=threshold), min_layer=L // 2, skipped_kv="propagate"
            ),
        )
    if "tuned" in lenses:  # a better lens at the exit layer: same thresholds, quality should improve
        for threshold in (0.7, 0.9):
            add(
                f"early_exit_maxprob_{threshold}_propagate_tuned",
                lens=lenses["tuned"],
                schedule=EarlyExit(
                    measure=MaxProb(threshold=threshold), min_layer=L // 2, skipped_kv="propagate"
                ),
            )
    # Saturation needs no vocabulary projection per layer (only at the exit), so its per-layer checks are cheap. On
    # the default model the cosine of consecutive layers (15..30) is ~0.95-0.98 with a 90th percentile of ~0.98
    # (a prose passage), so lower thresholds would exit at min_layer every time.
    for threshold in (0.98, 0.99):
        for skipped_kv in SKIPPED_KV:
            add(
                f"early_exit_saturation_{threshold}_{skipped_kv}",
                schedule=EarlyExit(
                    measure=Saturation(threshold=threshold), min_layer=L // 2, skipped_kv=skipped_kv
                ),
            )

    times: dict[str, list[float]] = {name: [] for name in variants}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, lenssample.GenerateOutput] = {}
    lenssample.generate(model, ids, max_new_tokens=4, eos_token_id=[])  # warm-up

    def write_results() -> None:
        results = {}
        greedy_quality = full_model_quality(model, ids.shape[1], greedy_seq)
        for name, out in last.items():
            row = {
                "ms_per_token_median": statistics.median(times[name]) * 1000,
                "speedup_vs_greedy_median": statistics.median(ratios[name]),
                "speedups_per_round": ratios[name],
                "identical_to_greedy": bool(torch.equal(out.sequences, greedy_seq)),
                "blocks_per_token": out.trace.blocks_per_step,
            }
            if hasattr(out.trace, "acceptance_rate"):
                row.update(
                    drafted=out.trace.drafted, accepted=out.trace.accepted, acceptance_rate=out.trace.acceptance_rate,
                    accept_histogram=out.trace.accept_histogram, plain_steps=out.trace.plain_steps,
                )  # fmt: skip
            if name.startswith("early_exit"):
                row.update(full_model_quality(model, ids.shape[1], out.sequences))
                row["mean_exit_layer"] = float(out.trace.info["exit_layer"].float().mean())
                # Attention-only calls that filled skipped layers (skipped_kv="propagate"), per token.
                row["propagated_attention_per_token"] = float(out.trace.info["propagated"].float().mean())
            if name == "greedy":
                row.update(greedy_quality)
            results[name] = row
            print(name, json.dumps({k: v for k, v in row.items() if k != "speedups_per_round"}))
        record = {
            "model": args.model or "smollm2-135m-instruct",
            "num_layers": L,
            "new_tokens": n,
            "rounds_completed": len(times["greedy"]),
            "prompt": PROMPT,
            "machine": f"{platform.machine()} {platform.processor()} torch threads={torch.get_num_threads()}, 2-core CPU",
            "searches": searches,
            "results": results,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=1))
        Path(args.out).with_suffix(".md").write_text(markdown(record, " ".join(sys.argv[1:])))
        plot_early_exit(record, Path(args.out).with_name(Path(args.out).stem + "_early_exit.png"))

    for round_index in range(1, args.rounds + 1):
        round_times = {}
        order = list(variants) if round_index % 2 == 1 else list(reversed(variants))
        for name in order:
            start = time.perf_counter()
            last[name] = variants[name]()
            round_times[name] = (time.perf_counter() - start) / n
            print(f"  {name}: {round_times[name] * 1000:.1f} ms/token", flush=True)
        for name, value in round_times.items():
            times[name].append(value)
            ratios[name].append(round_times["greedy"] / value)
        print(f"round {round_index}: " + ", ".join(f"{k}={v * 1000:.1f}ms" for k, v in round_times.items()))
        write_results()  # after every round, so that a slow machine still leaves results

    print("wrote", args.out)


if __name__ == "__main__":
    main()
