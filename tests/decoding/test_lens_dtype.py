"""``lens_dtype``: the lens projection in a lower precision, approximate but close; parity strategies exempt."""

from __future__ import annotations

import pytest
import torch

import lenssample
from lenssample.decoding.compiled import lens_projection
from lenssample.lens.base import LogitLens
from lenssample.stats import kl_divergence
from tests.conftest import make_tiny_model


@pytest.mark.parametrize("rows", [1, 3])
@torch.no_grad()
def test_a_bfloat16_projection_gives_nearly_the_float32_distribution(rows):
    model = make_tiny_model("qwen2", seed=5)
    lens = LogitLens(model)
    hidden = torch.randn(rows, 2, 32, generator=torch.Generator().manual_seed(0))
    exact = lens(hidden, (2, 4))
    projection = lens_projection(model, torch.bfloat16, rows * 2)
    approx = lens(hidden, (2, 4), projection=projection)
    assert approx.dtype == torch.float32
    kl = kl_divergence(torch.log_softmax(exact, -1), torch.log_softmax(approx, -1))
    assert float(kl.max()) < 1e-3
    assert not torch.equal(exact, approx), "the projection did not run in bfloat16"
    assert lens_projection(model, torch.float32, 1) is None  # the model's own precision: nothing to convert


def test_parity_strategies_project_in_the_models_precision():
    model = make_tiny_model("llama", seed=6)
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(1))
    spec = "dola-reference:layers=[0,2]"
    exact = lenssample.generate(model, ids, spec, max_new_tokens=6, eos_token_id=[])
    low = lenssample.generate(model, ids, spec, max_new_tokens=6, eos_token_id=[], lens_dtype="bfloat16")
    assert torch.equal(exact.sequences, low.sequences)
    assert torch.equal(exact.trace.info["premature_layer"], low.trace.info["premature_layer"])


def test_lens_dtype_is_validated_before_any_model_work():
    with pytest.raises(ValueError, match=r"lens_dtype='bf16' is not one of .*bfloat16"):
        lenssample.DecodingSettings(lens_dtype="bf16")
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="drop lens_dtype"):
        lenssample.generate(model, torch.tensor([[5, 6]]), schedule="early-exit", lens_dtype="bfloat16")
