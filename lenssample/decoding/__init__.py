"""The decoding loop and its outputs."""

from lenssample.decoding.api import generate
from lenssample.decoding.loop import Prompt, decode, prepare_prompt
from lenssample.decoding.outputs import GenerateOutput, Trace
from lenssample.decoding.sampling import TokenPicker, build_processors

__all__ = [
    "generate",
    "decode",
    "prepare_prompt",
    "Prompt",
    "GenerateOutput",
    "Trace",
    "TokenPicker",
    "build_processors",
]
