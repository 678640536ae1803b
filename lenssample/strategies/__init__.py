"""Strategies: which distribution the next token is drawn from (see :mod:`lenssample.strategies.base`)."""

from lenssample.specs import parse_assignments
from lenssample.strategies.base import (
    STRATEGIES,
    FinalLayer,
    SingleLayer,
    Strategy,
    StrategyOutput,
    as_strategy,
    register_strategy,
    strategy_from_name,
)
from lenssample.strategies.contrast import AutoContrastive, LayerContrast
from lenssample.strategies.dola import DoLa, DoLaReference, DoLaStatic
from lenssample.strategies.ensemble import LayerEnsemble, LayerWindow
from lenssample.strategies.sled import SLED

__all__ = [
    "SLED",
    "STRATEGIES",
    "AutoContrastive",
    "DoLa",
    "DoLaReference",
    "DoLaStatic",
    "FinalLayer",
    "LayerContrast",
    "LayerEnsemble",
    "LayerWindow",
    "SingleLayer",
    "Strategy",
    "StrategyOutput",
    "as_strategy",
    "parse_assignments",
    "register_strategy",
    "strategy_from_name",
]
