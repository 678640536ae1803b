"""Logit-lens heatmaps of a sentence: PNG pictures coloured by two statistics and an HTML page with tooltips.

Run from the repository root: ``python examples/lens_heatmap.py [OUT_DIR]`` (default ``docs/images``).
"""

import sys
from pathlib import Path

import lenssample
from lenssample.plotting.figures import plot_trajectory
from lenssample.plotting.html import trajectory_html

out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
model, tokenizer = lenssample.load_model()
text = "The Eiffel Tower is in Paris. The Colosseum is in Rome. The Brandenburg Gate is in"
traj = lenssample.analysis.trajectory(model, tokenizer, text)  # every layer, every position
print("final layer's top token at the end:", traj.top_tokens[-1, -1])
window = traj.last(14)  # the tail of the sentence, where the pattern is established
plot_trajectory(window, stat="prob", path=out / "lens_heatmap_prob.png")
plot_trajectory(window, stat="rank", path=out / "lens_heatmap_rank.png")
trajectory_html(window, stat="prob", path=out / "lens_heatmap.html")
print(f"wrote {out}/lens_heatmap_prob.png, lens_heatmap_rank.png, lens_heatmap.html")
