"""How good the tuned lens is on text unlike its training text: leave one book out, and held-out Wikipedia.

    python evals/lens_quality/run.py [--model smollm2-135m-instruct] [--steps 250 --max-tokens 32768 ...]
        [--positions 2048] [--books dubliners fairy-tales] [--only lobo|wikipedia] [--out DIR]

1. Leave one book out (LOBO): for each book of :mod:`lenssample.data.corpora` (a fold), a tuned lens is trained
   (the recipe from the flags, as ``lenssample train-lens``) on *all* passages of the other books (the recipe's
   ``--max-tokens`` drawn at random from them, the train and held-out splits of :func:`~lenssample.data.books`
   alike); it and the logit lens are evaluated on ``--positions`` positions spread over all passages of the
   held-out book (:func:`~lenssample.analysis.lens_eval.compare_lenses`, windows of the recipe's ``--seq-len``).
   Each fold writes ``folds/BOOK.json`` (with its wall time and CPU seconds), which a rerun reads back instead of
   redoing the fold; an interrupted fold resumes from its training checkpoints. The folds are pooled per layer
   (position-weighted means): ``lobo.json``, ``lobo.md`` (the table, the worst book per layer, the goal) and
   ``lobo.png``.
2. Held-out Wikipedia: the model's cached tuned lens (``default_lens_path``, the leaderboard's), or where there is
   none (or with ``--no-cached-lens``) one trained with the recipe on ``mixed("train")`` and kept in
   ``OUT/wikipedia_lens``, on ``--wikipedia-positions`` positions of ``wikipedia("heldout")``: ``wikipedia.json``
   and ``wikipedia.md``.

The goal checked: tuned KL <= 1/10 of the logit lens's at every layer from L/3 to 5L/6 (10-25 of SmolLM2's 30
layers, 6-15 of Gemma-3's 18).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from lenssample.analysis.lens_eval import LensComparison, compare_lenses
from lenssample.cli.common import add_dataclass_args, check_positive, dataclass_from_args
from lenssample.data.corpora import BOOKS, _book_passages, mixed, wikipedia
from lenssample.data.windows import token_windows
from lenssample.eval.runs import load_by_name
from lenssample.lens.base import LogitLens
from lenssample.lens.train import TrainConfig, train_tuned_lens, trained_lens
from lenssample.lens.tuned import default_lens_path
from lenssample.plotting.figures import LOG_FLOOR, METRIC_LABELS, output_folder, plain, save_figure
from lenssample.validation import check_choice

GOAL = 0.1  # tuned KL at most this fraction of the logit lens's


# The books of the corpus by short name: pride-and-prejudice, heart-of-darkness, ..., the-voyage-out.
BOOK_NAMES = [re.sub(r"[^a-z0-9]+", "-", title.split(" (")[0].lower()).strip("-") for _, title, _, _ in BOOKS]


def book_folds() -> dict[str, list]:
    """All passages of each book of the corpus, by short name (:data:`BOOK_NAMES`)."""
    return dict(zip(BOOK_NAMES, map(list, _book_passages())))


def goal_check(result: LensComparison) -> tuple[dict[str, Any], str]:
    """Whether the tuned lens's KL is at most :data:`GOAL` x the logit lens's at every layer from L/3 to 5L/6:
    ``({"layers": [first, last], "met": [...], "missed": [...], "all_met": bool}, a markdown line)``."""
    num_layers = len(result.layers) - 1
    first, last = round(num_layers / 3), round(5 * num_layers / 6)
    ratio = result.kl_ratio("tuned")
    meets = [layer for layer, r in enumerate(ratio) if r is not None and r <= GOAL]
    missed = [layer for layer in range(first, last + 1) if layer not in meets]
    verdict = ("**not met**: " + ", ".join(f"{i} ({ratio[i]:.3f})" for i in missed)) if missed else "**met**"
    line = (f"Goal, tuned KL <= {GOAL:g} x logit KL at every layer from {first} to {last}: {verdict}. Layers that "
            f"meet it: {', '.join(map(str, meets)) or 'none'}.")  # fmt: skip
    return {"layers": [first, last], "met": meets, "missed": missed, "all_met": not missed}, line


def run_lobo(model: Any, tokenizer: Any, books: dict[str, Sequence[Any]], config: TrainConfig, out: Path, *,
             positions: int = 2048, folds: Sequence[str] | None = None,
             model_name: str = "") -> dict[str, Any]:  # fmt: skip
    """Leave one book out over ``books`` (``{name: texts}``), holding out each of ``folds`` (default: every book)
    in turn; writes ``OUT/folds/BOOK.json`` per fold (a finished one is read back, not redone), then
    ``lobo.json``, ``lobo.md`` and ``lobo.png``. Returns what ``lobo.json`` holds besides the pooled comparison."""
    windows = {name: token_windows(texts, tokenizer, seq_len=config.seq_len) for name, texts in books.items()}
    settings = {"recipe": config.fingerprint_settings(), "positions": positions, "books": list(books)}
    parts, records = {}, {}
    for book in [check_choice(name, list(books), field="folds") for name in folds or books]:
        path = out / "folds" / f"{book}.json"
        if not path.is_file():
            wall, cpu, checkpoints = time.perf_counter(), time.process_time(), path.with_suffix(".ckpt")
            train = [w for name, ws in windows.items() if name != book for w in ws]
            lens = train_tuned_lens(model, train, config, checkpoint_dir=checkpoints)
            result = compare_lenses(model, {"logit": LogitLens(model), "tuned": lens}, windows[book],
                                    max_positions=positions)  # fmt: skip
            result.save_json(path, settings=settings, training=lens.training_info, cpu_seconds=round(
                time.process_time() - cpu, 1), wall_seconds=round(time.perf_counter() - wall, 1))  # fmt: skip
            shutil.rmtree(checkpoints, ignore_errors=True)
        record = json.loads(path.read_text())
        if record["settings"] != settings:
            raise ValueError(f"{path} was made with other settings (recipe, --positions or books) than this run's "
                             f"{settings}; pass another --out, or delete the file to redo the fold")  # fmt: skip
        parts[book] = LensComparison.load_json(path)
        records[book] = {"positions": record["positions"], "train_tokens": record["training"]["train_tokens"],
                         "wall_seconds": record["wall_seconds"], "cpu_seconds": record["cpu_seconds"]}  # fmt: skip
        print(f"fold {book}: {records[book]}", flush=True)
    pooled = LensComparison.pooled(list(parts.values()))
    ratios = {book: part.kl_ratio("tuned") for book, part in parts.items()}
    worst = [max(((r[i], b) for b, r in ratios.items() if r[i] is not None), default=(None, None))
             for i in range(len(pooled.layers))]  # fmt: skip
    goal, goal_line = goal_check(pooled)
    summary = {"model": model_name, "settings": settings, "folds": records, "ratio": pooled.kl_ratio("tuned"),
               "worst": [{"book": b, "ratio": r} for r, b in worst], "goal": goal}  # fmt: skip
    pooled.save_json(out / "lobo.json", **summary)
    rows = [f"| {b} | {r['positions']} | {r['train_tokens']} | {r['wall_seconds']} | {r['cpu_seconds']} |"
            for b, r in records.items()]  # fmt: skip
    recipe = ", ".join(f"{k}={v}" for k, v in settings["recipe"].items())
    (out / "lobo.md").write_text("\n".join([
        f"# Tuned lens vs logit lens, leave one book out: {model_name}", "",
        f"Per fold, a tuned lens trained on all passages of the other {len(books) - 1} books ({recipe}), and the "
        f"logit lens, on {positions} positions spread over the held-out book. Per layer, position-weighted means "
        "over the folds: KL(final ‖ lens) in nats, top-1 agreement with the final layer; worst book: the fold with "
        "the largest tuned / logit KL ratio at that layer.", "",
        "| held-out book | positions | training tokens | wall s | CPU s |", "|---|---|---|---|---|", *rows, "",
        pooled.markdown(("kl", "agreement"), extra={"worst book: tuned kl / logit": [
            "-" if b is None else f"{r:.3f} ({b})" for r, b in worst]}), "", goal_line, ""]))  # fmt: skip
    plot_lobo(parts, pooled, goal, out / "lobo.png", f"{model_name}: KL to the final layer on held-out books")
    print(goal_line)
    return summary


def plot_lobo(parts: dict[str, LensComparison], pooled: LensComparison, goal: dict[str, Any], path: Path,
              title: str) -> None:  # fmt: skip
    """KL per layer on a log axis, logit and tuned lens: a thin line per fold, the pooled mean thick."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(*goal["layers"], color="0.92", label="the goal's layers")
    goal_kl = GOAL * np.asarray(pooled.metrics["logit"]["kl"])
    curves = [(goal_kl, dict(color="k", ls="--", lw=1, label=f"{GOAL:g} x logit"))]
    for color, name in (("tab:blue", "logit"), ("tab:orange", "tuned")):
        curves += [(f.metrics[name]["kl"], dict(color=color, lw=0.7, alpha=0.4)) for f in parts.values()]
        label = f"{name} lens, mean of {len(parts)} held-out books (thin: each)"
        curves.append((pooled.metrics[name]["kl"], dict(color=color, lw=2.5, label=label)))
    for kl, style in curves:
        ax.plot(pooled.layers, np.where(np.asarray(kl) > LOG_FLOOR, kl, np.nan), **style)
    ax.set(yscale="log", xlabel="layer", ylabel=METRIC_LABELS["kl"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(plain(title), fontsize=10)
    save_figure(fig, path)


def run_wikipedia(model: Any, tokenizer: Any, lens_path: Path, train_texts: Sequence[Any], heldout: Sequence[Any],
                  config: TrainConfig, out: Path, *, positions: int = 1024,
                  model_name: str = "") -> dict[str, Any]:  # fmt: skip
    """The tuned lens at ``lens_path`` (trained there on ``train_texts`` with ``config`` when missing) and the
    logit lens on ``positions`` positions of ``heldout``: writes ``wikipedia.json`` and ``wikipedia.md``; returns
    the goal (:func:`goal_check`)."""
    lens = trained_lens(lens_path, model, train_texts, config, tokenizer=tokenizer, data="mixed")
    windows = token_windows(heldout, tokenizer, seq_len=config.seq_len)
    lenses = {"logit": LogitLens(model), "tuned": lens}
    result = compare_lenses(model, lenses, windows, max_positions=positions)
    goal, goal_line = goal_check(result)
    result.save_json(out / "wikipedia.json", model=model_name, lens=str(lens_path), training=lens.training_info,
                     ratio=result.kl_ratio("tuned"), goal=goal)  # fmt: skip
    (out / "wikipedia.md").write_text("\n".join([
        f"# Tuned lens vs logit lens, held-out Wikipedia articles: {model_name}", "",
        f"The tuned lens `{lens_path}` (trained on {lens.training_info.get('data')}, "
        f"{lens.training_info.get('train_tokens')} tokens, {lens.training_info.get('steps')} KL steps) on "
        f"{result.positions} positions of held-out articles.", "",
        result.markdown(("kl", "agreement")), "", goal_line, ""]))  # fmt: skip
    print(goal_line)
    return goal


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="a load_model name (also gemma3-270m), folder, or factory:module:function")  # fmt: skip
    parser.add_argument("--positions", type=int, default=2048, help="evaluation positions per held-out book (8 "
                        "windows of 256 tokens: with 1-2 windows a fold's KL depends on which passages they fall "
                        "in)")  # fmt: skip
    parser.add_argument("--wikipedia-positions", type=int, default=1024, help="held-out Wikipedia positions")
    parser.add_argument("--books", nargs="+", default=None, metavar="BOOK", help="the books to hold out (default "
                        f"all; each fold trains on all the others): {', '.join(BOOK_NAMES)}")  # fmt: skip
    parser.add_argument("--only", choices=("lobo", "wikipedia"), default=None, help="one part (default both)")
    parser.add_argument("--no-cached-lens", action="store_true",
                        help="Wikipedia: train a lens with the recipe even if the model has a cached one")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="default: evals/results/lens_quality/MODEL")
    add_dataclass_args(parser, TrainConfig)  # the recipe: --steps, --max-tokens, --lr, ...
    args = parser.parse_args(argv)
    config = dataclass_from_args(args, TrainConfig)
    for book in args.books or []:
        check_choice(book, BOOK_NAMES, field="--books")
    check_positive(args.positions, "--positions")
    check_positive(args.wikipedia_positions, "--wikipedia-positions")
    safe_name = default_lens_path(args.model).name
    out = output_folder(args.out or Path("evals/results/lens_quality") / safe_name)
    if args.threads is not None:
        check_positive(args.threads, "--threads")
        torch.set_num_threads(args.threads)
    model, tokenizer = load_by_name(args.model)
    if args.only != "wikipedia":
        run_lobo(model, tokenizer, book_folds(), config, out, positions=args.positions, folds=args.books,
                 model_name=args.model)  # fmt: skip
    if args.only != "lobo":
        cached = default_lens_path(args.model)
        lens_path = out / "wikipedia_lens" if args.no_cached_lens or not cached.is_dir() else cached
        run_wikipedia(model, tokenizer, lens_path, mixed("train"), wikipedia("heldout"), config, out,
                      positions=args.wikipedia_positions, model_name=args.model)  # fmt: skip
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
