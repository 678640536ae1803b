"""Every function that returns lens outputs for many positions estimates their size first and, past
``max_output_bytes``, refuses before the model runs, with the size and what to pass instead."""

from __future__ import annotations

import re

import pytest
import torch

from lenssample import LayerEnsemble, LogitLens, apply_lens, score
from lenssample.analysis import compare_lenses, layer_statistics, trajectory
from lenssample.lens.passes import lens_pass
from lenssample.scoring import target_scores
from lenssample.strategies.fit import layer_token_log_probs
from tests.conftest import make_tiny_model

IDS = torch.randint(3, 96, (1, 12), generator=torch.Generator().manual_seed(0))
CALLS = {  # name: (call with a budget, the fix the message gives)
    "apply_lens": (lambda m, b: apply_lens(m, IDS, max_output_bytes=b), "layers= or positions="),
    "score": (lambda m, b: score(m, IDS, return_log_probs=True, max_output_bytes=b), "drop return_log_probs"),
    "score-streams": (
        lambda m, b: score(m, IDS, "ensemble", max_output_bytes=b),
        "fewer layers or positions",
    ),
    "target_scores": (
        lambda m, b: target_scores(m, IDS, IDS, IDS > 0, LayerEnsemble(), max_output_bytes=b),
        "fewer layers or positions",
    ),  # fmt: skip
    "trajectory": (lambda m, b: trajectory(m, None, IDS[0], max_output_bytes=b), "smaller top_k"),
    "layer_statistics": (lambda m, b: layer_statistics(m, IDS, max_output_bytes=b), "shorter texts"),
    "lens_pass": (lambda m, b: lens_pass(m, IDS, (0, 2, 4), max_output_bytes=b), "fewer layers or positions"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_output_over_budget_is_refused_before_the_model_runs(name):
    call, message = CALLS[name]
    model = make_tiny_model("llama")
    call(model, 10**6)  # within budget: runs
    model.register_forward_pre_hook(lambda *args: pytest.fail("the model ran"))
    with pytest.raises(
        ValueError, match=rf"would take 0\.0\d MiB \(.* bytes\), over max_output_bytes=1000; .*{message}"
    ):
        call(model, 1000)


CHUNKED = {  # every entry that takes a chunk budget
    "score": lambda m, b: score(m, IDS, max_chunk_bytes=b),
    "target_scores": lambda m, b: target_scores(m, IDS, IDS, IDS > 0, LayerEnsemble(), max_chunk_bytes=b),
    "trajectory": lambda m, b: trajectory(m, None, IDS[0], max_chunk_bytes=b),
    "layer_statistics": lambda m, b: layer_statistics(m, IDS, max_chunk_bytes=b),
    "compare_lenses": lambda m, b: compare_lenses(m, {"logit": LogitLens(m)}, [IDS[0]], max_chunk_bytes=b),
    "layer_token_log_probs": lambda m, b: layer_token_log_probs(m, IDS, (1, 2), max_chunk_bytes=b),
}


@pytest.mark.parametrize("name", sorted(CHUNKED))
@pytest.mark.parametrize("budget", [0, -5, 1.5, "big"])
def test_a_chunk_budget_that_is_not_a_positive_size_is_refused_before_the_model_runs(name, budget):
    model = make_tiny_model("llama")
    model.register_forward_pre_hook(lambda *args: pytest.fail("the model ran"))
    with pytest.raises(ValueError, match=re.escape(f"max_chunk_bytes={budget!r} must be an integer")):
        CHUNKED[name](model, budget)
