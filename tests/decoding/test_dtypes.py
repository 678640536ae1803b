"""Half-precision models (bfloat16, float16) through every strategy: the lens hands strategies float32 logits, so
their combination math never runs in half precision; final-layer greedy still equals ``model.generate``."""

from __future__ import annotations

import pytest
import torch

import lenssample
from lenssample.decoding.loop import _check_finite
from lenssample.lens.base import LogitLens
from tests.conftest import make_tiny_model
from tests.strategy_cases import ALL

DTYPES = [torch.bfloat16, torch.float16]


@pytest.fixture(scope="module", params=DTYPES, ids=str)
def half_model(request):
    return make_tiny_model("llama", seed=3).to(request.param)


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_strategy_decodes_a_half_precision_model(half_model, name):
    strategy = ALL[name]
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    out = lenssample.generate(half_model, ids, strategy, max_new_tokens=5, eos_token_id=[])
    assert out.new_tokens.shape == (2, 5)
    # The strategy's own output on the half-precision model's lens: float32, no NaN, no all -inf row.
    layers = strategy.check_model(4)
    hidden = torch.randn(3, len(layers), 32, generator=torch.Generator().manual_seed(1)).to(half_model.dtype)
    lens = LogitLens(half_model).with_final_norm(strategy.apply_final_norm)
    decision = strategy(lens(hidden, layers), layers)
    assert decision.logits.dtype == torch.float32
    _check_finite(decision.logits, strategy)
    assert bool(torch.isfinite(decision.logits).any(-1).all()), "a row with no finite logit"


def test_final_layer_greedy_equals_model_generate_in_half_precision(half_model):
    ids = torch.randint(3, 96, (1, 8), generator=torch.Generator().manual_seed(2))
    ours = lenssample.generate(half_model, ids, "final", max_new_tokens=10, eos_token_id=[])
    theirs = half_model.generate(ids, do_sample=False, max_new_tokens=10, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.sequences, theirs)
