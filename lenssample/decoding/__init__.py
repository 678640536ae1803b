"""The per-token decoding loop and what every loop shares: settings, prompt, token picking, emission, outputs.

Compute schedules that own the loop (early exit, self-speculative decoding) live in :mod:`lenssample.schedules`;
:func:`lenssample.generate` (:mod:`lenssample.api`) runs one or the other.
"""

from lenssample.decoding.emission import EmissionPolicy, Emitter
from lenssample.decoding.loop import decode
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.prompt import Prompt, prepare_prompt
from lenssample.decoding.sampling import TokenPicker
from lenssample.decoding.settings import DecodingSettings

__all__ = [
    "DecodingSettings",
    "EmissionPolicy",
    "Emitter",
    "GenerateOutput",
    "Prompt",
    "TokenPicker",
    "Trace",
    "decode",
    "prepare_prompt",
]
