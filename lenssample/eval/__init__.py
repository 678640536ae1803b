"""Evaluation harness: perplexity, multiple choice, generation quality and speed of any strategy, sweeps.

Library modules (each usable alone): :mod:`~lenssample.eval.perplexity`, :mod:`~lenssample.eval.multiple_choice`,
:mod:`~lenssample.eval.generation`, :mod:`~lenssample.eval.speed`, :mod:`~lenssample.eval.data`; sweeps from a
TOML file: :mod:`~lenssample.eval.config`, :mod:`~lenssample.eval.runs` (records, resume, summary),
:mod:`~lenssample.eval.distributed` (torch.distributed shards), and :mod:`~lenssample.eval.lm_eval_model`
(an lm-evaluation-harness model). The perplexity function is ``lenssample.eval.perplexity.perplexity``. Strategies are taken by name from the registry, never imported here.
"""

from lenssample.eval.generation import quality_stats
from lenssample.eval.multiple_choice import ChoiceItem, ChoiceScoring, mc_metrics, score_continuations
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
