"""Every entry that returns distributions refuses NaN or +inf with an error naming the layer, never reads or skips
it: a tuned lens damaged after loading (its translator set to NaN, past the load check) and a model whose block
weights are damaged, through the API, the schedules and the CLI."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lenssample import DoLa, DoLaStatic, TunedLens, apply_lens, generate, score
from lenssample.analysis import compare_lenses, layer_statistics, trajectory
from lenssample.cli import main
from lenssample.eval.perplexity import perplexity
from lenssample.scoring import target_scores
from tests.conftest import make_tiny_model
from tests.eval_helpers import CharTokenizer

IDS = torch.randint(3, 96, (1, 12), generator=torch.Generator().manual_seed(0))
# Each reads layer 2 (the first broken one) and lets the lens be passed.
ENTRIES = {
    "generate": lambda m, lens: generate(m, IDS, strategy=DoLa(layers=[1, 2, 3]), lens=lens, max_new_tokens=2,
                                         repetition_penalty=1.2),
    "early-exit": lambda m, lens: generate(m, IDS, schedule="early-exit:min_layer=1", lens=lens, max_new_tokens=2),
    "speculative": lambda m, lens: generate(m, IDS, schedule="speculative:draft_layer=2", lens=lens),
    "score": lambda m, lens: score(m, IDS, DoLaStatic(premature_layer=2), lens=lens),
    "target_scores": lambda m, lens: target_scores(m, IDS, IDS, IDS > 0, DoLaStatic(premature_layer=2), lens=lens),
    "perplexity": lambda m, lens: perplexity(m, [IDS[0].tolist()], DoLaStatic(premature_layer=2), window=8,
                                             lens=lens),
    "apply_lens": lambda m, lens: apply_lens(m, IDS, lens=lens),
    "trajectory": lambda m, lens: trajectory(m, None, IDS[0], lens=lens),
    "layer_statistics": lambda m, lens: layer_statistics(m, IDS, lens=lens),
    "compare_lenses": lambda m, lens: compare_lenses(m, {"lens": lens}, [IDS[0]]),
}  # fmt: skip


def damaged_model() -> torch.nn.Module:
    model = make_tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = math.nan  # layers 2.. (after block 1) are NaN
    return model


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_damaged_tuned_lens_is_refused_naming_the_layer(entry):
    model = make_tiny_model("llama")
    lens = TunedLens(model)
    with torch.no_grad():
        lens.weight[2, 0, 0] = math.nan  # the translator of layer 2
    with pytest.raises(ValueError, match=r"layer 2 hold NaN or \+inf.*(lens's|TunedLens's parameters)"):
        ENTRIES[entry](model, lens)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_damaged_model_is_refused_naming_the_layer(entry):
    # (Schedules decode the prompt at full depth first: they meet layer 4 first.)
    with pytest.raises(ValueError, match=r"layer [24] hold NaN or \+inf.*(weights|residual stream)"):
        ENTRIES[entry](damaged_model(), None)


def test_the_cli_reports_the_broken_layer(monkeypatch, capsys):
    class Tokenizer(CharTokenizer):
        def __call__(self, text, return_tensors=None):
            return SimpleNamespace(input_ids=torch.tensor([self.encode(text)]))

    monkeypatch.setattr("lenssample.cli.lens.load", lambda args: (damaged_model(), Tokenizer()))
    assert main(["lens", "hello there"]) == 2
    err = capsys.readouterr().err
    assert "layer 2 hold NaN or +inf" in err and len(err.strip().splitlines()) == 1, err


def test_the_compiled_step_hands_nan_on_to_the_loops_check():
    # NaN only from the first generated token on (its embedding), so the eagerly run prefill is clean and the
    # compiled step (where the strategy checks nothing) meets it. (Untied embeddings: the unembedding stays sound.)
    model = make_tiny_model("mistral")
    first = generate(model, IDS, max_new_tokens=1).new_tokens[0, 0]
    with torch.no_grad():
        model.get_input_embeddings().weight[first] = math.nan
    with pytest.raises(FloatingPointError, match="strategy 'final' produced NaN or \\+inf"):
        generate(model, IDS, compile=True, max_new_tokens=3, eos_token_id=[])
