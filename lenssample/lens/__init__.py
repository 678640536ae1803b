"""Lenses over a causal LM's residual stream (see :mod:`lenssample.lens.base` for the layer convention)."""

from lenssample.lens.apply import LensOutput, apply_lens
from lenssample.lens.base import Lens, LogitLens, as_lens
from lenssample.lens.capture import LayerOutputs, run_layers, truncated_blocks

__all__ = [
    "Lens",
    "LogitLens",
    "LensOutput",
    "LayerOutputs",
    "apply_lens",
    "as_lens",
    "run_layers",
    "truncated_blocks",
]
