"""Presets (published settings by name) and the DoLa repetition-penalty warning."""

from __future__ import annotations

import warnings

import pytest
import torch

import lenssample
from lenssample import SLED
from lenssample.strategies.base import as_strategy
from tests.conftest import make_tiny_model


@pytest.mark.parametrize(
    ("preset", "rate", "scale"),
    [("factor", 2.0, 10), ("truthfulqa-mc", 2.5, 75), ("strategyqa", 1.75, 5), ("gsm8k", 2.0, 10)],
)
def test_sled_presets_are_the_authors_settings(preset, rate, scale):
    sled = as_strategy(f"sled:preset={preset}")
    assert (sled.evolution_rate, sled.evolution_scale) == (rate, scale)
    assert SLED.from_preset(preset) == sled
    assert as_strategy(sled.to_spec()) == sled  # the spec of a preset reads back without it


def test_given_parameters_win_over_the_preset_and_unknown_presets_are_named():
    sled = as_strategy("sled:preset=truthfulqa-mc,evolution_scale=20")
    assert (sled.evolution_rate, sled.evolution_scale) == (2.5, 20)
    with pytest.raises(ValueError, match="no preset 'truthfulqa'. Did you mean 'truthfulqa-mc'"):
        as_strategy("sled:preset=truthfulqa")
    with pytest.raises(ValueError, match="Its presets: \\(none\\)"):
        as_strategy("dola:preset=generation")


def test_dola_generation_without_a_repetition_penalty_warns_once_with_the_fix():
    model = make_tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    with pytest.warns(UserWarning, match=r"generates with repetition_penalty=1\.0; .*repetition_penalty=1\.2 \(CLI: "
                      r"--repetition-penalty 1\.2\)"):  # fmt: skip
        lenssample.generate(model, ids, "dola:layers=[1,2]", max_new_tokens=2)
    with pytest.warns(UserWarning, match=r"generates with repetition_penalty=1\.0; "):  # unset (None): no penalty
        model.generate(ids, max_new_tokens=2, custom_generate=lenssample.custom_generate("dola:layers=[1,2]"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lenssample.generate(model, ids, "dola:layers=[1,2]", max_new_tokens=2, repetition_penalty=1.2)
        lenssample.generate(model, ids, "contrast", max_new_tokens=2)
        lenssample.score(model, ids, "dola:layers=[1,2]")  # scoring is not generation
    assert not [w for w in caught if "repetition_penalty" in str(w.message)]
