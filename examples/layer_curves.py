"""Per-layer lens quality: KL(final || lens) and top-1 agreement with the final layer, for one or more lenses.

Run from the repository root: ``python examples/layer_curves.py [OUT_DIR] [TUNED_LENS_DIR]``. With a saved tuned
lens folder, its curves are drawn next to the logit lens's.
"""

import sys
from pathlib import Path

import lenssample
from lenssample.plotting.figures import plot_layer_curves

out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
model, tokenizer = lenssample.load_model()
# Public-domain prose (Jane Austen, Pride and Prejudice, 1813).
text = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife. However little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters."
)
lenses = {"logit": None}
if len(sys.argv) > 2:
    from lenssample.lens.tuned import TunedLens  # the tuned-lens module, when installed

    lenses["tuned"] = TunedLens.load(sys.argv[2], model)
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
