"""Plot a decoding trace: which layer a layer-choosing strategy used for each generated token.

The strategy here is defined in this example only, to have something that records a per-token decision: it reads
the top layers through the logit lens and emits the first layer whose top probability reaches a
threshold (a CALM-like exit rule, but computing every layer, so no compute is saved). Any strategy that fills
``trace.info`` (DoLa's ``premature_layer``, early exit's ``exit_layer``, speculative ``accepted``) plots the same way.

``python examples/decoding_trace.py [--out DIR]``: the picture goes to DIR (created if missing; default a new
temporary folder); ``--out docs/images`` from the repository root updates the README's picture.
"""

import argparse
from dataclasses import dataclass

import torch

import lenssample
from lenssample.plotting.figures import output_folder, plot_trace
from lenssample.strategies.base import Strategy, StrategyOutput


@dataclass(frozen=True, kw_only=True)
class FirstConfidentLayer(Strategy):
    """The first layer from ``min_layer`` up whose top-1 probability is at least ``threshold``."""

    name = "example_first_confident"
    min_layer: int = 22
    threshold: float = 0.8

    def __post_init__(self) -> None:
        if self.min_layer < 0:
            raise ValueError(f"min_layer={self.min_layer}: must be >= 0")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold}: must be in (0, 1]")

    def layers(self, num_layers: int) -> tuple[int, ...]:
        return tuple(range(min(self.min_layer, num_layers), num_layers + 1))

    def __call__(self, lens_logits: torch.Tensor, layers: tuple[int, ...]) -> StrategyOutput:
        confident = torch.softmax(lens_logits, dim=-1).amax(dim=-1) >= self.threshold  # [rows, n_layers]
        confident[:, -1] = True  # the final layer always answers
        index = confident.float().argmax(dim=-1)  # first confident layer
        logits = lens_logits[torch.arange(len(index)), index]
        return StrategyOutput(logits=logits, info={"exit_layer": torch.tensor(layers)[index]})


parser = argparse.ArgumentParser(description="Plot the layer an exit rule chose for each generated token.")
parser.add_argument("--out", default=None, help="output folder (default: a new temporary folder)")
args = parser.parse_args()
try:
    out = output_folder(args.out)  # checked before the model loads
except ValueError as err:
    parser.error(str(err))
model, tokenizer = lenssample.load_model()
prompt = "The three primary colours are"
result = lenssample.generate(
    model, prompt, tokenizer=tokenizer, strategy=FirstConfidentLayer(), max_new_tokens=24
)
print(prompt + result.texts(tokenizer)[0])
plot_trace(
    result,
    tokenizer,
    title=f"first layer from 22 with p(top-1) >= 0.8 (logit lens); prompt {prompt!r}",
    path=out / "decoding_trace.png",
)
print(f"wrote {out}/decoding_trace.png")
