"""Peak memory of the long-text entry points, at two text lengths: does it stay flat as the text grows?

    python evals/memory/run.py [--lengths 1024 8192] [--only TEXT] [--out evals/results/memory]

Each measurement runs in a fresh Python process (``ru_maxrss`` is a high-water mark that never goes down): it loads
the default model (SmolLM2-135M, float32, CPU), tokenises held-out Wikipedia articles up to the length (the model
reads at most 8192 positions), runs the model once on 8 tokens (the first pass pages in the weights and sets up the
kernels), notes the peak resident memory so far (``loaded``), runs one function over the
text and notes the peak again. Reported: the peak, and the increase over ``loaded`` (what the call itself needed
above the model and the text), for each function and length. Functions reading the whole text at once stop at the
model's 8192 positions; those reading it in windows (``window=1024``: 1024 tokens at a time, each window adding 512
new positions) also run at 16384 tokens. Writes ``results.json`` and ``report.md`` (``--only``: measure the
functions whose name contains TEXT, keeping the other rows of an earlier ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

TASKS = {
    "score (final layer)": "lenssample.score(model, ids)",
    "score (dola:layers=high)": "lenssample.score(model, ids, 'dola:layers=high')",
    "score (ensemble, all 31 layers)": "lenssample.score(model, ids, 'ensemble')",
    "perplexity (window 1024, stride 512)": (
        "perplexity(model, [ids[0].tolist()], FinalLayer(), window=1024, stride=512, batch_size=4)"
    ),
    "trajectory (all 31 layers, top 5)": "trajectory(model, tokenizer, ids[0])",
    "layer_statistics (all 31 layers)": "layer_statistics(model, ids)",
    "score (final layer), window 1024": "lenssample.score(model, ids, window=1024)",
    "score (ensemble, all 31 layers), window 1024": "lenssample.score(model, ids, 'ensemble', window=1024)",
    "trajectory (all 31 layers, top 5), window 1024": "trajectory(model, tokenizer, ids[0], window=1024)",
    "layer_statistics (all 31 layers), window 1024": "layer_statistics(model, ids, window=1024)",
}
MAX_POSITIONS = 8192  # the default model's; only windows read more


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(task: str, length: int) -> None:
    """One measurement (in its own process): prints ``{"loaded": MiB, "peak": MiB}``."""
    import torch

    import lenssample
    from lenssample import FinalLayer
    from lenssample.analysis import layer_statistics, trajectory
    from lenssample.data import wikipedia
    from lenssample.eval.perplexity import perplexity

    torch.set_num_threads(2)
    model, tokenizer = lenssample.load_model()
    tokens: list[int] = []
    for document in wikipedia("heldout"):
        tokens += tokenizer.encode(document.text + "\n\n")
        if len(tokens) >= length:
            break
    assert len(tokens) >= length, "not enough held-out text"
    ids = torch.tensor([tokens[:length]])
    with torch.inference_mode():  # the first pass pages in the weights and sets up the kernels
        model(ids[:, :8])
    loaded = peak_mib()
    names = dict(lenssample=lenssample, FinalLayer=FinalLayer, perplexity=perplexity, trajectory=trajectory,
                 layer_statistics=layer_statistics, model=model, tokenizer=tokenizer, ids=ids)  # fmt: skip
    with torch.inference_mode():
        eval(TASKS[task], names)
    print(json.dumps({"loaded": loaded, "peak": peak_mib()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 16384])
    parser.add_argument("--only", default="", help="measure only the functions whose name contains this")
    parser.add_argument("--out", default="evals/results/memory")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    out = Path(args.out)
    earlier = json.loads((out / "results.json").read_text()) if args.only and (out / "results.json").is_file() else []
    results = [r for r in earlier if r["task"] in TASKS and args.only not in r["task"]]
    root = str(Path(__file__).resolve().parents[2])  # children import this checkout's lenssample
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    for task in (task for task in TASKS if args.only in task):
        for length in args.lengths:
            if length > MAX_POSITIONS and "window" not in task:
                continue
            run = subprocess.run([sys.executable, __file__, "--child", task, str(length)], capture_output=True,
                                 text=True, check=True, env=env)  # fmt: skip
            measured = json.loads(run.stdout.strip().splitlines()[-1])
            call = measured["peak"] - measured["loaded"]
            results.append({"task": task, "tokens": length, **measured, "call": call})
            print(results[-1], flush=True)
    results.sort(key=lambda r: (list(TASKS).index(r["task"]), r["tokens"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| function | tokens | peak RSS (MiB) | above the loaded model (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['tokens']} | {r['peak']:.0f} | {r['call']:.0f} |" for r in results]
    (out / "report.md").write_text("# Peak memory by text length\n\n" + __doc__.split("\n\n", 2)[2].strip() + "\n\n"
                                   + "\n".join(lines) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
