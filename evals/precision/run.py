"""What a bfloat16 lens projection (``lens_dtype="bfloat16"``) changes, measured on held-out text.

    python evals/precision/run.py [--model smollm2-135m-instruct] [--positions 1024] [--out evals/results/lens_precision]

Over held-out Wikipedia articles (windows of 128 tokens), every layer's logit-lens distribution is computed with
the unembedding in float32 and in bfloat16 (the strategies combine float32 logits either way). Reported: per layer,
the mean and maximum KL(float32 ‖ bfloat16) and the top-1 agreement; for DoLa (high and low buckets) the agreement
of the premature layer chosen per position and of the argmax token; for the final layer the argmax agreement.
Writes ``results.json`` and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lenssample import DoLa, load_model
from lenssample.data import wikipedia
from lenssample.data.windows import token_windows
from lenssample.decoding.compiled import lens_projection
from lenssample.lens.base import LogitLens
from lenssample.lens.passes import lens_pass
from lenssample.model.adapters import model_parts
from lenssample.stats import kl_divergence


@torch.inference_mode()
def measure(model_name: str, positions: int) -> dict:
    model, tokenizer = load_model(model_name)
    num_layers = model_parts(model).num_layers
    layers = tuple(range(num_layers + 1))
    lens = LogitLens(model)
    windows = token_windows(wikipedia("heldout"), tokenizer, seq_len=128, max_positions=positions)
    kl_sum = torch.zeros(len(layers), dtype=torch.float64)
    kl_max = torch.zeros(len(layers), dtype=torch.float64)
    agree = torch.zeros(len(layers), dtype=torch.float64)
    strategies = {"dola-high": DoLa(layers="high"), "dola-low": DoLa(layers="low")}
    dola = {name: {"premature_agree": 0.0, "token_agree": 0.0} for name in strategies}
    rows = 0
    for window in windows:
        lp = lens_pass(model, window[None, :-1], layers)
        for chunk in lp.chunks(lens, copies=6):
            exact = chunk.logits
            projection = lens_projection(model, torch.bfloat16, exact.shape[0] * exact.shape[1])
            low = lens(lp.hidden[chunk.start : chunk.stop], layers, projection=projection)
            kl = kl_divergence(torch.log_softmax(exact, -1), torch.log_softmax(low, -1)).double()  # [rows, layers]
            kl_sum += kl.sum(0)
            kl_max = torch.maximum(kl_max, kl.max(0).values)
            agree += (exact.argmax(-1) == low.argmax(-1)).double().sum(0)
            for name, strategy in strategies.items():
                read = strategy.check_model(num_layers)
                a, b = strategy(exact[:, list(read)], read), strategy(low[:, list(read)], read)
                dola[name]["premature_agree"] += float(
                    (a.info["premature_layer"] == b.info["premature_layer"]).double().sum()
                )
                dola[name]["token_agree"] += float((a.logits.argmax(-1) == b.logits.argmax(-1)).double().sum())
            rows += exact.shape[0]
    return {
        "model": model_name,
        "positions": rows,
        "layers": list(layers),
        "kl_mean": (kl_sum / rows).tolist(),
        "kl_max": kl_max.tolist(),
        "top1_agreement": (agree / rows).tolist(),
        "dola": {name: {k: v / rows for k, v in figures.items()} for name, figures in dola.items()},
    }


def report(results: dict) -> str:
    lines = [
        f"# bfloat16 lens projection vs float32: {results['model']}, {results['positions']} held-out Wikipedia "
        "positions",
        "",
        "Command: `python evals/precision/run.py`. KL(float32 ‖ bfloat16) of each layer's logit-lens distribution "
        "(nats), and how often the top-1 token is the same.",
        "",
        "| layer | mean KL | max KL | top-1 agreement |",
        "|---|---|---|---|",
    ]
    for i, layer in enumerate(results["layers"]):
        lines.append(
            f"| {layer} | {results['kl_mean'][i]:.2e} | {results['kl_max'][i]:.2e} | "
            f"{results['top1_agreement'][i]:.4f} |"
        )
    lines += ["", "| strategy | premature-layer agreement | argmax-token agreement |", "|---|---|---|"]
    for name, figures in results["dola"].items():
        lines.append(f"| {name} | {figures['premature_agree']:.4f} | {figures['token_agree']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=Path("evals/results/lens_precision"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = measure(args.model, args.positions)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "report.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
