"""Strategies: which distribution the next token is drawn from (see :mod:`lenssample.strategies.base`)."""

from lenssample.strategies.base import (
    STRATEGIES,
    FinalLayer,
    SingleLayer,
    Strategy,
    StrategyOutput,
    parse_assignments,
    register_strategy,
    strategy_from_name,
)

__all__ = [
    "STRATEGIES",
    "FinalLayer",
    "SingleLayer",
    "Strategy",
    "StrategyOutput",
    "parse_assignments",
    "register_strategy",
    "strategy_from_name",
]

# Strategies that mix and contrast layers (issue 3).
from lenssample.strategies.contrast import AutoContrastive, LayerContrast  # noqa: E402
from lenssample.strategies.dola import DoLa, DoLaReference, DoLaStatic  # noqa: E402
from lenssample.strategies.ensemble import LayerEnsemble, LayerWindow  # noqa: E402
from lenssample.strategies.sled import SLED  # noqa: E402

__all__ += [
    "AutoContrastive",
    "DoLa",
    "DoLaReference",
    "DoLaStatic",
    "LayerContrast",
    "LayerEnsemble",
    "LayerWindow",
    "SLED",
]
