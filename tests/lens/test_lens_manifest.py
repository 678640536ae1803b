"""Saved lenses carry a manifest: a damaged or edited lens is refused by name (it cannot be rebuilt), and so is one
whose weights hold NaN or infinities."""

from __future__ import annotations

import pytest
import torch

from lenssample.lens.tuned import TunedLens
from tests.conftest import make_tiny_model
from tests.lens.test_tuned_lens import _random_lens
from tests.model.test_cache import _replace

DAMAGES = {  # (format, what is done to the folder, what the refusal names)
    "truncated weights": ("lenssample", lambda f: (f / "model.safetensors").write_bytes(b"\0" * 16),
                          "model.safetensors has 16 bytes"),
    "garbage config": ("lenssample", lambda f: (f / "config.json").write_text("garbage"), "config.json has 7 bytes"),
    "config edited in place": ("lenssample", lambda f: _replace(f / "config.json", '"num_layers": 4', '"num_layers": 9'),
                               "config.json was changed"),
    "missing weights": ("lenssample", lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
    "truncated params.pt": ("tuned-lens", lambda f: (f / "params.pt").write_bytes(b"PK"), "params.pt has 2 bytes"),
}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_lens_is_refused_with_the_fix(tmp_path, damage):
    model = make_tiny_model("llama")
    fmt, harm, named = DAMAGES[damage]
    folder = _random_lens(model).save(tmp_path / "lens", format=fmt)
    harm(folder)
    with pytest.raises(ValueError, match=f"lens in .* is damaged: {named}.*lenssample train-lens --out"):
        TunedLens.load(folder, model)


def test_the_model_card_may_be_edited(tmp_path):
    model = make_tiny_model("llama")
    lens = _random_lens(model)
    folder = lens.save(tmp_path / "lens")
    (folder / "README.md").write_text("# my notes\n")
    assert torch.equal(TunedLens.load(folder, model).weight, lens.weight)


@pytest.mark.parametrize("fmt, value", [("lenssample", float("nan")), ("tuned-lens", float("inf"))])
def test_a_lens_with_non_finite_weights_is_refused(tmp_path, fmt, value):
    model = make_tiny_model("llama")
    lens = _random_lens(model)
    with torch.no_grad():
        lens.weight[1, 2, 3] = value
    folder = lens.save(tmp_path / "lens", format=fmt)  # the manifest is intact: the values are what is wrong
    with pytest.raises(ValueError, match="weight'? holds NaN or infinite values.*lenssample train-lens"):
        TunedLens.load(folder, model)
