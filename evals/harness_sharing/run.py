"""Scoring an item under every variant at once against one variant at a time, side by side in one process.

    python evals/harness_sharing/run.py [MODEL] [TASK]      # defaults: smollm2-135m-instruct openbookqa

Takes the leaderboard's variants (evals/configs/leaderboard.toml) that have a teacher-forced distribution (fitted
ones left out: they need a fit first), the first item of TASK, and times ``Task.evaluate_many`` (what the harness
does: one forward pass, each chunk's projection shared) and then ``Task.evaluate`` per variant; prints both times and
any record that differs between the two by more than 1e-3 (relative).
"""

from __future__ import annotations

import sys
import time

import torch

from lenssample.eval.config import load_config
from lenssample.eval.tasks import Context, build_task, scoring_strategy
from lenssample.lens.tuned import load_lens
from lenssample.model.loading import load_model


def main(name: str = "smollm2-135m-instruct", task_name: str = "openbookqa") -> None:
    torch.set_num_threads(2)
    config = load_config("evals/configs/leaderboard.toml")
    model, tokenizer = load_model(name)
    ctx = Context(model=model, tokenizer=tokenizer, lens=load_lens("logit", model))
    variants = [v.for_model(name) for v in config.variants if v.fit is None]
    variants = [v for v in variants if scoring_strategy(v) is not None]
    task = build_task(next(t for t in config.tasks if t.name == task_name))
    _, payload = task.items(ctx)[0]
    start = time.perf_counter()
    together = task.evaluate_many(ctx, payload, variants)
    shared = time.perf_counter() - start
    start = time.perf_counter()
    alone = [task.evaluate(ctx, payload, variant) for variant in variants]
    separate = time.perf_counter() - start
    print(f"{name} {task_name}, {len(variants)} variants: together {shared:.1f} s, one at a time {separate:.1f} s "
          f"({separate / shared:.1f}x)")  # fmt: skip
    for variant, a, b in zip(variants, together, alone):
        for key in ("nll", "acc", "mc2", "excluded"):
            if key in b and abs(a[key] - b[key]) > 1e-3 * max(1.0, abs(b[key])):
                print(f"differs: {variant.label} {key} {a[key]} vs {b[key]}")


if __name__ == "__main__":
    main(*sys.argv[1:])
