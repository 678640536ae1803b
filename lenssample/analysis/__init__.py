"""Looking at what the lens sees: trajectories of a text (:mod:`~lenssample.analysis.trajectory`), per-layer
statistics over a corpus (:mod:`~lenssample.analysis.layer_stats`) and lens comparisons
(:mod:`~lenssample.analysis.lens_eval`). Every one reads layers through :func:`lenssample.lens.passes.lens_pass`
and computes its statistics with :mod:`lenssample.stats`."""

from lenssample.analysis.layer_stats import LayerStatistics, frequent_tokens, layer_statistics
from lenssample.analysis.lens_eval import LensComparison, compare_lenses, spread_windows
from lenssample.analysis.trajectory import Trajectory, readable_token, trajectory

__all__ = [
    "LayerStatistics",
    "LensComparison",
    "Trajectory",
    "compare_lenses",
    "frequent_tokens",
    "layer_statistics",
    "readable_token",
    "spread_windows",
    "trajectory",
]
