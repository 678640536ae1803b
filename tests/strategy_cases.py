"""Instances of every mixing/contrast strategy, for tiny models of 4 layers (shared by the strategy tests)."""

from __future__ import annotations

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
