"""Lenses over a causal LM's residual stream (see :mod:`lenssample.lens.base` for the layer convention)."""

from lenssample.lens.apply import LensOutput, apply_lens
from lenssample.lens.base import Lens, LogitLens, as_lens
from lenssample.lens.passes import LensPass, lens_pass
from lenssample.lens.train import TrainConfig, train_tuned_lens
from lenssample.lens.tuned import TunedLens, default_lens_path, load_lens

__all__ = [
    "Lens",
    "LensOutput",
    "LensPass",
    "LogitLens",
    "TrainConfig",
    "TunedLens",
    "apply_lens",
    "as_lens",
    "default_lens_path",
    "lens_pass",
    "load_lens",
    "train_tuned_lens",
]
