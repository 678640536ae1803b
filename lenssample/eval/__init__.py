"""Evaluation harness: perplexity, multiple choice, generation quality and speed of any variant (strategy or
schedule), and sweeps over models x lenses x variants x tasks.

Library modules (each usable alone): :mod:`~lenssample.eval.perplexity`, :mod:`~lenssample.eval.multiple_choice`,
:mod:`~lenssample.eval.generation`, :mod:`~lenssample.eval.speed` (the one timing loop); sweeps from a TOML file:
:mod:`~lenssample.eval.config`, :mod:`~lenssample.eval.runs` (records, resume, summary),
:mod:`~lenssample.eval.distributed` (torch.distributed shards). Data sources are :mod:`lenssample.data.sets`;
variants are built by name from the registries, never imported here.
"""

from lenssample.data.sets import ChoiceItem
from lenssample.eval.generation import quality_stats
from lenssample.eval.multiple_choice import ChoiceScoring, mc_metrics, score_continuations
from lenssample.eval.perplexity import PerplexityResult, rolling_windows

__all__ = [
    "ChoiceItem",
    "ChoiceScoring",
    "PerplexityResult",
    "mc_metrics",
    "quality_stats",
    "rolling_windows",
    "score_continuations",
]
