"""Instances of every mixing/contrast strategy, for tiny models of 4 layers, and a hypothesis generator of extreme
lens logits (shared by the strategy and schedule tests)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lenssample import (
    SLED,
    AutoContrastive,
    DoLa,
    DoLaReference,
    DoLaStatic,
    LayerContrast,
    LayerEnsemble,
    LayerWindow,
)

# Per-row strategies: a batch must give the same tokens as each prompt alone.
PER_ROW = {
    "dola-high": DoLa(layers="high"),
    "dola-list": DoLa(layers=[0, 1, 2, 3], alpha=0.2),
    "dola-static": DoLaStatic(premature_layer=1),
    "ensemble-uniform": LayerEnsemble(),
    "ensemble-linear-product": LayerEnsemble(weights="linear", combine="product"),
    "ensemble-exponential": LayerEnsemble(layers=[2, 3, 4], weights="exponential", decay=0.5),
    "ensemble-entropy": LayerEnsemble(weights="entropy", temperature=0.5),
    "ensemble-maxprob-product": LayerEnsemble(weights="max_prob", combine="product"),
    "ensemble-explicit": LayerEnsemble(layers=[4, 1, 3], weights=[0.5, 0.2, 0.3]),
    "window": LayerWindow(window=2, gamma=0.4),
    "window-only": LayerWindow(window=2, gamma=1.0),  # 0 * log q_L must not be NaN where q_L is 0
    "ensemble-huge-weights": LayerEnsemble(layers=[3, 4], weights=[1e308, 1e308]),  # their sum overflows
    "ensemble-entropy-cold": LayerEnsemble(weights="entropy", temperature=1e-50),  # -H / T overflows
    "contrast": LayerContrast(amateur_layer=1, beta=0.5),
    "contrast-scoring": LayerContrast(amateur_layer=-3, beta=1.0, excluded_logit=-1000.0),
    "acd": AutoContrastive(amateur_layer=2),
    "sled": SLED(),
    "sled-list": SLED(layers=[0, 1, 3], evolution_scale=5, evolution_rate=1.0),
}
# Batch-dependent like its reference (one premature layer per batch).
BATCH_DEPENDENT = {"dola-reference": DoLaReference(layers=[0, 1, 2, 3])}
ALL = {**PER_ROW, **BATCH_DEPENDENT}

# Strategies whose output is a normalised log-distribution.
NORMALISED = {"ensemble-uniform", "ensemble-linear-product", "ensemble-exponential", "ensemble-entropy",
              "ensemble-maxprob-product", "ensemble-explicit", "window", "window-only", "acd",
              "ensemble-huge-weights", "ensemble-entropy-cold"}  # fmt: skip

VOCAB = 24
# Property tests: reproducible (no example database, derandomized) and without time limits.
FIXED = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@st.composite
def lens_logits(draw, n_layers: int) -> torch.Tensor:
    """``[rows, n_layers, vocab]`` finite logits of any size (±1e30 and more): random, scaled huge or tiny, shifted; then maybe
    identical layers, ties, ``-inf`` columns, or a single finite token per (row, layer)."""
    rows = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    logits = rng.standard_normal((rows, n_layers, VOCAB)).astype(np.float32)
    logits = logits * np.float32(draw(st.sampled_from([1.0, 30.0, 1e4, 1e30, 1e-30, 0.0])))
    logits = logits + np.float32(draw(st.sampled_from([0.0, 1e6, -1e6, 1e30, -1e30])))
    if draw(st.booleans()):  # identical layers
        logits[:] = logits[:, :1]
    if draw(st.booleans()):  # ties: several tokens share the top logit in every layer
        logits[..., :3] = logits.max(axis=-1, keepdims=True)
    n_masked = draw(st.integers(0, VOCAB - 1))  # -inf columns; at least one finite token per (row, layer)
    if n_masked:
        columns = rng.choice(VOCAB, size=n_masked, replace=False)
        which = draw(st.sampled_from(["all", "mature", "premature", "single"]))
        if which == "single":  # one finite token per (row, layer), a different one in each
            keep = rng.integers(0, VOCAB, (rows, n_layers, 1))
            logits = np.where(np.arange(VOCAB) == keep, logits, np.float32(-np.inf))
        else:
            layer_slice = {"all": slice(None), "mature": slice(-1, None), "premature": slice(0, -1)}[which]
            logits[:, layer_slice, columns] = -np.inf
    return torch.from_numpy(logits)
