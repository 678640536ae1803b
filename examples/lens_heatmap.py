"""Logit-lens heatmaps of a sentence: PNG pictures coloured by two statistics and an HTML page with tooltips.

``python examples/lens_heatmap.py [--out DIR]``: the files go to DIR (created if missing; default a new temporary
folder); ``--out docs/images`` from the repository root updates the README's pictures.
"""

import argparse

import lenssample
from lenssample.plotting.figures import output_folder, plot_trajectory
from lenssample.plotting.html import trajectory_html

parser = argparse.ArgumentParser(description="Logit-lens heatmaps (PNG) and an HTML page of a sentence.")
parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
args = parser.parse_args()
try:
    out = output_folder(args.out)  # checked before the model loads
except ValueError as err:
    parser.error(str(err))
model, tokenizer = lenssample.load_model()
text = "The Eiffel Tower is in Paris. The Colosseum is in Rome. The Brandenburg Gate is in"
traj = lenssample.analysis.trajectory(model, tokenizer, text)  # every layer, every position
print("final layer's top token at the end:", traj.top_tokens[-1, -1])
window = traj.last(14)  # the tail of the sentence, where the pattern is established
plot_trajectory(window, stat="prob", path=out / "lens_heatmap_prob.png")
plot_trajectory(window, stat="rank", path=out / "lens_heatmap_rank.png")
trajectory_html(window, stat="prob", path=out / "lens_heatmap.html")
print(f"wrote {out}/lens_heatmap_prob.png, lens_heatmap_rank.png, lens_heatmap.html")
