"""How far an affine translator can go on a held-out book: the ceiling of the tuned lens's KL fine-tuning.

    python evals/lens_quality/ceiling.py [--model smollm2-135m-instruct] [--book the-island-of-doctor-moreau]
        [--layers 10 11] [--positions 1024] [--out DIR]

One leave-one-book-out fold (:mod:`evals.lens_quality.run`): the model runs once over the other books (the recipe's
``--max-tokens``, as ``lenssample train-lens``), which gives the cached residual streams and the closed-form start
(ridge, strength chosen on held-out windows of those books). Then, for the chosen layers only (a step costs
``len(layers) / L`` of a full training step), the translator is fine-tuned on ``KL(final || lens)`` from that start
under several schedules of AdamW (steps x positions per step x peak learning rate, warm-up and cosine decay as in
:mod:`lenssample.lens.train`), up to many times the default recipe's work, and the ridge fit is redone at other
strengths. Each result is the KL ratio (tuned / logit lens) on ``--positions`` positions of the held-out book and on
the fold's in-distribution held-out positions (unseen windows of the training books). If no schedule moves the
held-out book below the goal, the recipe is not what stops it: the affine map is.

Writes ``OUT/ceiling_BOOK.json`` and ``OUT/ceiling_BOOK.md`` (default OUT: evals/results/lens_quality/MODEL/recipes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BOOK_NAMES, book_folds  # noqa: E402

from lenssample.analysis.lens_eval import spread_windows  # noqa: E402
from lenssample.cli.common import add_dataclass_args, check_positive, dataclass_from_args  # noqa: E402
from lenssample.data.windows import token_windows  # noqa: E402
from lenssample.eval.runs import load_by_name  # noqa: E402
from lenssample.lens.checkpoints import read_checkpoint, set_translators  # noqa: E402
from lenssample.lens.fit import regression_pairs, ridge_solution  # noqa: E402
from lenssample.lens.train import TrainConfig, _lr_factor, heldout_kl, kl_step, train_tuned_lens  # noqa: E402
from lenssample.lens.tuned import TunedLens, default_lens_path  # noqa: E402
from lenssample.model.adapters import model_parts  # noqa: E402
from lenssample.model.capture import run_layers  # noqa: E402
from lenssample.validation import check_int  # noqa: E402

# (steps, positions per step, peak lr): the default recipe's work on these layers is 250 x 32 at 1e-4
SCHEDULES = (
    (250, 32, 1e-4),
    (250, 32, 3e-4),
    (125, 64, 3e-4),
    (250, 32, 6e-4),
    (400, 64, 1e-3),
    (800, 128, 3e-4),
)
RIDGE_STRENGTHS = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def fine_tune(lens: TunedLens, start: tuple[torch.Tensor, torch.Tensor], train: torch.Tensor, layers: list[int],
              steps: int, batch: int, lr: float, config: TrainConfig) -> None:  # fmt: skip
    """The recipe's KL fine-tuning (AdamW, warm-up, cosine decay, clipping) of ``layers`` only, from ``start``;
    ``train: [positions, len(layers)+1, d]`` (last slice: the final layer)."""
    set_translators(lens, *start)
    optimizer = torch.optim.AdamW([lens.weight, lens.bias], lr=lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + 1)
    for step in range(steps):
        hidden = train[torch.randint(train.shape[0], (batch,), generator=generator)].float()
        kl_step(lens, optimizer, hidden, lr * _lr_factor(step, steps, max(1, steps // 10)), config.max_grad_norm,
                layers)  # fmt: skip


def ceiling(model: nn.Module, tokenizer: Any, books: dict[str, list], book: str, layers: list[int],
            config: TrainConfig, out: Path, *, positions: int = 1024, schedules=SCHEDULES,
            strengths=RIDGE_STRENGTHS, model_name: str = "") -> dict[str, Any]:  # fmt: skip
    """The fold holding out ``book`` of ``books`` (``{name: texts}``): ridge strengths and fine-tuning
    ``schedules`` of ``layers``, each scored on ``positions`` positions of the held-out book and on the fold's
    in-distribution held-out positions; writes ``OUT/ceiling_BOOK.json`` and ``.md`` and returns the former."""
    out.mkdir(parents=True, exist_ok=True)
    windows = {name: token_windows(texts, tokenizer, seq_len=config.seq_len) for name, texts in books.items()}
    train_windows = [w for name, ws in windows.items() if name != book for w in ws]
    checkpoints = out / f"ceiling_{book}.ckpt"
    wall = time.perf_counter()
    start_lens = train_tuned_lens(
        model, train_windows, config, checkpoint_dir=checkpoints, steps=0, progress=False
    )
    data = read_checkpoint(checkpoints / "data.safetensors")
    shutil.rmtree(checkpoints, ignore_errors=True)
    last = start_lens.num_layers
    keep = [*layers, last]
    train, inside = data["train_hidden"][:, keep], data["heldout_hidden"][:, keep]
    evaluation = spread_windows([w for w in windows[book] if w.numel() >= 2], positions)
    with torch.no_grad():
        held_out = torch.cat([run_layers(model, w[None], keep, use_cache=False, keep=None).hidden[0, :-1]
                              for w in evaluation])[:positions]  # fmt: skip
    lens = TunedLens(model, placement=config.placement)  # all zero: the logit lens
    scored = {"book": held_out, "in-distribution": inside}
    base = {where: heldout_kl(lens, hidden, 128, layers) for where, hidden in scored.items()}
    rows = []

    def record(name: str) -> None:
        ratios = {where: (heldout_kl(lens, hidden, 128, layers) / base[where]).tolist()
                  for where, hidden in scored.items()}  # fmt: skip
        rows.append({"fit": name, **ratios})
        print(name, {k: [round(x, 4) for x in v] for k, v in ratios.items()}, flush=True)

    features, targets = regression_pairs(train, model_parts(model).final_norm,
                                         after_norm=config.placement == "after_norm")  # fmt: skip
    gram = torch.bmm(features.transpose(1, 2), features).double()
    cross = torch.bmm(features.transpose(1, 2), targets).double()
    d = gram.shape[-1] - 1
    for strength in strengths:
        theta = ridge_solution(gram, cross, strength)
        with torch.no_grad():
            lens.weight.zero_()
            lens.bias.zero_()
            lens.weight[layers] = theta[:, :d].transpose(1, 2).float()
            lens.bias[layers] = theta[:, d].float()
        record(f"ridge {strength:g} (cached positions only)")
    start = (data["start_weight"], data["start_bias"])
    set_translators(lens, *start)
    record("closed-form start (the recipe's)")
    for steps, batch, lr in schedules:
        began = time.perf_counter()
        fine_tune(lens, start, train, layers, steps, batch, lr, config)
        record(f"{steps} steps x {batch} positions, lr {lr:g} ({time.perf_counter() - began:.0f} s)")
    logit_kl = {where: base[where].tolist() for where in base}
    result = {"model": model_name, "book": book, "layers": layers, "positions": held_out.shape[0],
              "in_distribution_positions": inside.shape[0], "recipe": config.fingerprint_settings(),
              "logit_kl": logit_kl, "rows": rows, "wall_seconds": round(time.perf_counter() - wall, 1)}  # fmt: skip
    (out / f"ceiling_{book}.json").write_text(json.dumps(result, indent=1) + "\n")
    header = " | ".join(f"{where} L{layer}" for where in ("book", "in-distribution") for layer in layers)
    lines = [f"# Ceiling of the affine translator: {model_name}, held-out book {book}", "",
             f"KL(final ‖ tuned) / KL(final ‖ logit) at layers {layers} on {held_out.shape[0]} positions of the "
             f"held-out book and {inside.shape[0]} held-out positions of the training books (logit KL: "
             + ", ".join(f"{k} {[round(x, 2) for x in v]}" for k, v in logit_kl.items())
             + f"). Training text: {config.max_tokens} tokens of the other books. `python evals/lens_quality/"
             f"ceiling.py --model {model_name} --book {book}`.", "",
             f"| fit | {header} |", "|---" * (1 + 2 * len(layers)) + "|"]  # fmt: skip
    for row in rows:
        values = [f"{x:.3f}" for where in ("book", "in-distribution") for x in row[where]]
        lines.append(f"| {row['fit']} | {' | '.join(values)} |")
    (out / f"ceiling_{book}.md").write_text("\n".join(lines) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--book", default="the-island-of-doctor-moreau", choices=BOOK_NAMES)
    parser.add_argument("--layers", type=int, nargs="+", default=[10, 11])
    parser.add_argument("--positions", type=int, default=1024, help="positions of the held-out book")
    parser.add_argument("--out", default=None, help="default: evals/results/lens_quality/MODEL/recipes")
    add_dataclass_args(parser, TrainConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(args, TrainConfig)
    check_positive(args.positions, "--positions")
    model, tokenizer = load_by_name(args.model)
    for layer in args.layers:
        check_int(layer, field="--layers", low=0, high=model_parts(model).num_layers - 1)
    out = Path(
        args.out or Path("evals/results/lens_quality") / default_lens_path(args.model).name / "recipes"
    )
    ceiling(model, tokenizer, book_folds(), args.book, args.layers, config, out, positions=args.positions,
            model_name=args.model)  # fmt: skip
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
