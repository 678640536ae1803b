"""Held-out perplexity and decoding speed of the mixing/contrast strategies on the default model.

Perplexity: teacher-forced through ``lenssample.score`` on a fixed number of tokens of
``lenssample.data.wikipedia("heldout")`` (windows of ``--window`` tokens). Strategies that exclude tokens (DoLa,
layer contrast) score with ``excluded_logit=-1000`` as the DoLa paper does for likelihoods; the fraction of targets
they exclude is reported too. Fitted mixture weights are fitted on ``wikipedia("train")`` first.

Speed: greedy decoding (batch 1, EOS ignored, ``--new-tokens`` tokens), strategies run round-robin after a warm-up
round; medians of ``--repeats`` runs; ratios against ``FinalLayer`` in the same run.

    PYTHONPATH=. python evals/strategies_eval.py --tokens 2048 --new-tokens 32 --repeats 3 --out evals/results/strategies
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

import lenssample
from lenssample import (
    SLED,
    AutoContrastive,
    DoLa,
    DoLaReference,
    DoLaStatic,
    FinalLayer,
    LayerContrast,
    LayerEnsemble,
    LayerWindow,
)
from lenssample.data import wikipedia
from lenssample.strategies.fit import fit_layer_weights, token_windows

PROMPTS = [
    "The capital of France is",
    "Q: What is the boiling point of water at sea level?\nA:",
]


def perplexity_strategies() -> dict[str, lenssample.Strategy]:
    return {
        "final": FinalLayer(),
        "dola-high": DoLa(layers="high", excluded_logit=-1000.0),
        "dola-low": DoLa(layers="low", excluded_logit=-1000.0),
        "dola-static-24": DoLaStatic(premature_layer=24, excluded_logit=-1000.0),
        "contrast-b0.5-L15": LayerContrast(beta=0.5, excluded_logit=-1000.0),
        "acd-L15": AutoContrastive(),
        "sled": SLED(),
        "ensemble-uniform-all": LayerEnsemble(),
        "ensemble-exp0.7-all": LayerEnsemble(weights="exponential", decay=0.7),
        "ensemble-entropy-all": LayerEnsemble(weights="entropy"),
        "ensemble-product-linear-24..30": LayerEnsemble(layers=list(range(24, 31)), weights="linear", combine="product"),
        "window-4-g0.3": LayerWindow(window=4, gamma=0.3),
    }  # fmt: skip


def speed_strategies() -> dict[str, lenssample.Strategy]:
    return {
        "final": FinalLayer(),
        "dola-high": DoLa(layers="high"),
        "dola-reference-high": DoLaReference(layers="high"),
        "ensemble-uniform-all": LayerEnsemble(),
        "sled": SLED(),
        "contrast": LayerContrast(),
    }


def evaluate_perplexity(model, ids: torch.Tensor, strategy) -> dict:
    start = time.perf_counter()
    out = lenssample.score(model, ids, strategy)
    token_lp = out.token_log_probs[out.target_mask].double()
    nll = float(-token_lp.mean())
    return {
        "nll": nll,
        "perplexity": math.exp(nll) if nll < 700 else math.inf,
        "excluded_fraction": float((token_lp <= -999).double().mean()),
        "tokens": int(token_lp.numel()),
        "seconds": time.perf_counter() - start,
    }


def measure_speed(model, tokenizer, args: argparse.Namespace) -> dict:
    """Greedy ms/token per strategy, round-robin after a warm-up round; medians and ratios vs final."""
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Write a short story about a lighthouse keeper."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(chat, return_tensors="pt").input_ids
    timed = speed_strategies()
    times: dict[str, list[float]] = {name: [] for name in timed}
    for round_ in range(args.repeats + 1):
        for name, strategy in timed.items():
            start = time.perf_counter()
            lenssample.generate(
                model, ids, strategy=strategy, max_new_tokens=args.new_tokens, eos_token_id=[]
            )
            if round_:  # round 0 is the warm-up
                times[name].append((time.perf_counter() - start) / args.new_tokens * 1000)
    base = statistics.median(times["final"])
    speed = {
        name: {"median": statistics.median(t), "ratio_vs_final": statistics.median(t) / base, "runs": t}
        for name, t in times.items()
    }
    print("speed", {k: round(v["ratio_vs_final"], 3) for k, v in speed.items()}, flush=True)
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2048, help="held-out next-token targets")
    parser.add_argument(
        "--fit-tokens", type=int, default=2048, help="training targets for the fitted weights"
    )
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="evals/results/strategies")
    parser.add_argument("--speed-only", action="store_true", help="skip the fit, perplexity and generations")
    args = parser.parse_args()

    model, tokenizer = lenssample.load_model()
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        "shared with other jobs (timings are noisy; ratios are the signal)",
        "model": "SmolLM2-135M-Instruct fp32 CPU",
        "settings": vars(args),
    }

    if args.speed_only:
        results["speed_ms_per_token"] = measure_speed(model, tokenizer, args)
        out = Path(args.out).with_suffix(".speed.json")
        out.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"wrote {out}")
        return
    # Fitted mixture weights (train split), then held-out perplexity for every strategy.
    start = time.perf_counter()
    fit = fit_layer_weights(
        model, tokenizer, [d.text for d in wikipedia("train")], max_tokens=args.fit_tokens, window=args.window
    )
    results["fit"] = {
        "layers": list(fit.layers),
        "weights": [round(w, 4) for w in fit.weights],
        "train_nll": fit.nll,
        "train_final_nll": fit.final_nll,
        "train_tokens": fit.tokens,
        "seconds": time.perf_counter() - start,
    }
    print("fit", results["fit"], flush=True)
    heldout = token_windows(
        tokenizer, [d.text for d in wikipedia("heldout")], max_tokens=args.tokens, window=args.window
    )
    strategies = {**perplexity_strategies(), "ensemble-fitted": fit.strategy}
    results["perplexity"] = {}
    for name, strategy in strategies.items():
        results["perplexity"][name] = {
            "strategy": strategy.to_dict(),
            **evaluate_perplexity(model, heldout, strategy),
        }
        print(name, {k: v for k, v in results["perplexity"][name].items() if k != "strategy"}, flush=True)

    results["speed_ms_per_token"] = measure_speed(model, tokenizer, args)

    # A few generations side by side.
    shown = {
        "final": FinalLayer(),
        "dola-high": DoLa(layers="high"),
        "ensemble-fitted": fit.strategy,
        "sled": SLED(),
        "acd": AutoContrastive(),
    }
    results["generations"] = {}
    for prompt in PROMPTS:
        results["generations"][prompt] = {
            name: lenssample.generate(
                model,
                prompt,
                tokenizer=tokenizer,
                strategy=strategy,
                max_new_tokens=24,
                repetition_penalty=1.2,
            ).texts(tokenizer)[0]
            for name, strategy in shown.items()
        }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def markdown(results: dict) -> str:
    lines = [
        "# Mixing and contrast strategies on SmolLM2-135M-Instruct (CPU)",
        "",
        f"Produced by `evals/strategies_eval.py` ({results['settings']}). {results['machine']}.",
        "",
        "## Held-out perplexity (wikipedia('heldout'), teacher-forced through `lenssample.score`)",
        "",
        "| strategy | NLL (nats/token) | perplexity | targets excluded (scored -1000) |",
        "|---|---|---|---|",
    ]
    for name, row in results["perplexity"].items():
        lines.append(
            f"| {name} | {row['nll']:.4f} | {row['perplexity']:.3g} | {row['excluded_fraction']:.3f} |"
        )
    fit = results["fit"]
    lines += [
        "",
        f"Fitted mixture weights (fit on {fit['train_tokens']} train tokens: NLL {fit['train_nll']:.4f} vs final "
        f"layer {fit['train_final_nll']:.4f}); nonzero weights: "
        + ", ".join(f"L{layer}: {w}" for layer, w in zip(fit["layers"], fit["weights"]) if w > 1e-4),
        "",
        "## Greedy decoding speed (ms/token, medians, alternating order)",
        "",
        "| strategy | ms/token | ratio vs final |",
        "|---|---|---|",
    ]
    for name, row in results["speed_ms_per_token"].items():
        lines.append(f"| {name} | {row['median']:.1f} | {row['ratio_vs_final']:.2f} |")
    lines += ["", "## Generations (greedy, repetition penalty 1.2, 16 tokens)", ""]
    for prompt, outs in results["generations"].items():
        lines.append(f"**{prompt!r}**")
        lines.append("")
        for name, text in outs.items():
            lines.append(f"- `{name}`: {text!r}")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
