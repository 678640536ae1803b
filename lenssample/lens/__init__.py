"""Lenses over a causal LM's residual stream (see :mod:`lenssample.lens.base` for the layer convention)."""

from lenssample.lens.apply import LensOutput, apply_lens
from lenssample.lens.base import Lens, LogitLens, as_lens
from lenssample.lens.capture import LayerOutputs, run_layers, truncated_blocks
from lenssample.lens.train import train_tuned_lens
from lenssample.lens.tuned import TunedLens, default_lens_path

__all__ = [
    "Lens",
    "LogitLens",
    "LensOutput",
    "LayerOutputs",
    "TunedLens",
    "apply_lens",
    "as_lens",
    "default_lens_path",
    "run_layers",
    "train_tuned_lens",
    "truncated_blocks",
]
