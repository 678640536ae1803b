"""Compute schedules that own the decoding loop: early exit and lossless self-speculative decoding.

Schedules are registered like strategies and named by the same spec syntax::

    lenssample.generate(model, "Hello", tokenizer=tok, schedule="early-exit:measure=max-prob,threshold=0.9,min_layer=15")
    lenssample.generate(model, "Hello", tokenizer=tok, schedule="speculative:draft_layer=24,k=3")
"""

from lenssample.schedules.base import SCHEDULES, RowRun, Schedule, as_schedule, register_schedule
from lenssample.schedules.confidence import (
    MEASURES,
    Agreement,
    Confidence,
    Entropy,
    Margin,
    MaxProb,
    Saturation,
)
from lenssample.schedules.drafts import DRAFTS, Draft, LayerDraft, SkipDraft
from lenssample.schedules.early_exit import SKIPPED_KV, EarlyExit
from lenssample.schedules.search import SpeculativeChoice, choose_self_speculative
from lenssample.schedules.speculative import SelfSpeculative, SpeculativeTrace, predicted_speedup

__all__ = [
    "DRAFTS",
    "MEASURES",
    "SCHEDULES",
    "SKIPPED_KV",
    "Agreement",
    "Confidence",
    "Draft",
    "EarlyExit",
    "Entropy",
    "LayerDraft",
    "Margin",
    "MaxProb",
    "RowRun",
    "Saturation",
    "Schedule",
    "SelfSpeculative",
    "SkipDraft",
    "SpeculativeChoice",
    "SpeculativeTrace",
    "as_schedule",
    "choose_self_speculative",
    "predicted_speedup",
    "register_schedule",
]
