"""Pictures: logit-lens heatmaps, decoding traces and per-layer curves (:mod:`~lenssample.plotting.figures`,
matplotlib, headless), self-contained HTML heatmaps (:mod:`~lenssample.plotting.html`) and text tables
(:mod:`~lenssample.plotting.text`)."""

from lenssample.plotting.figures import (
    STATISTICS,
    output_folder,
    plot_bars,
    plot_layer_curves,
    plot_trace,
    plot_trajectory,
)
from lenssample.plotting.html import trajectory_html
from lenssample.plotting.text import text_table

__all__ = [
    "STATISTICS",
    "output_folder",
    "plot_bars",
    "plot_layer_curves",
    "plot_trace",
    "plot_trajectory",
    "text_table",
    "trajectory_html",
]
