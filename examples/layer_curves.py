"""Per-layer lens quality: KL(final || lens) and top-1 agreement with the final layer, for one or more lenses.

``python examples/layer_curves.py [TUNED_LENS_DIR] [--out DIR]``. With the folder of a saved tuned lens (e.g.
``~/.cache/lenssample/lenses/smollm2-135m-instruct`` after ``lenssample train-lens``), its curves are drawn next to
the logit lens's. The picture goes to DIR (created if missing; default a new temporary folder); ``--out docs/images``
from the repository root updates the README's picture.
"""

import argparse
from pathlib import Path

import lenssample
from lenssample.plotting.figures import output_folder, plot_layer_curves

parser = argparse.ArgumentParser(description="Per-layer lens quality of the logit lens (and a tuned lens).")
parser.add_argument("tuned_lens", nargs="?", default=None, metavar="TUNED_LENS_DIR",
                    help="folder of a saved tuned lens (config.json + model.safetensors) to compare")  # fmt: skip
parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
args = parser.parse_args()
# Both arguments are checked before the model loads.
if args.tuned_lens is not None and not (Path(args.tuned_lens).expanduser() / "config.json").is_file():
    parser.error(f"TUNED_LENS_DIR {args.tuned_lens!r} is not a saved tuned lens (no config.json in it); "
                 "train one with `lenssample train-lens`, or pass the output folder with --out DIR")  # fmt: skip
try:
    out = output_folder(args.out)
except ValueError as err:
    parser.error(str(err))
model, tokenizer = lenssample.load_model()
# Public-domain prose (Jane Austen, Pride and Prejudice, 1813).
text = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters."
)
lenses = {"logit": None}
if args.tuned_lens is not None:
    lenses["tuned"] = lenssample.TunedLens.load(Path(args.tuned_lens).expanduser(), model)
curves = {}
for name, lens in lenses.items():
    traj = lenssample.analysis.trajectory(model, tokenizer, text, lens=lens)
    curves[name] = {"layers": traj.layers, **traj.layer_summary()}
    kl = ", ".join(f"{layer}: {value:.1f}" for layer, value in zip(traj.layers[::5], curves[name]["kl"][::5]))
    print(f"{name} lens, KL(final || lens) by layer: {kl}")
plot_layer_curves(
    curves,
    metrics=["kl", "top1"],
    title=f"lens quality per layer ({len(traj.positions)} tokens of Pride and Prejudice)",
    path=out / "layer_curves.png",
)
print(f"wrote {out}/layer_curves.png")
