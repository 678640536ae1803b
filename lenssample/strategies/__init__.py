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
