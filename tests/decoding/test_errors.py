"""Bad input at the API boundary: a ValueError naming the parameter, the value and the fix."""

from __future__ import annotations

import pytest
import torch

import lenssample
from lenssample import FinalLayer, SingleLayer, generate, strategy_from_name
from lenssample.specs import parse_assignments
from lenssample.strategies.base import Strategy
from tests.conftest import VOCAB, make_tiny_model


@pytest.fixture(scope="module")
def model():
    return make_tiny_model("llama")


def _ids():
    return torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))


def test_layer_out_of_range(model):
    with pytest.raises(ValueError, match=r"layer=9 is out of range.*0\.\.4"):
        generate(model, _ids(), strategy=SingleLayer(layer=9))


def test_empty_prompt(model):
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long))


@pytest.mark.parametrize("value", [0, -3, 2.5])
def test_max_new_tokens(model, value):
    with pytest.raises(ValueError, match=f"max_new_tokens={value}"):
        generate(model, _ids(), max_new_tokens=value)


def test_token_ids_outside_vocabulary(model):
    with pytest.raises(ValueError, match=r"token id 500, outside the model's vocabulary 0\.\.95"):
        generate(model, torch.tensor([[5, 500]]))


def test_mismatched_tokenizer(model):
    class BigTokenizer:
        def __len__(self):
            return 50_000

    with pytest.raises(ValueError, match="tokenizer has 50000 tokens but the model's vocabulary has 96"):
        generate(model, "hello", tokenizer=BigTokenizer())


def test_text_prompt_without_tokenizer(model):
    with pytest.raises(ValueError, match="needs tokenizer"):
        generate(model, "hello")


def test_attention_mask_of_wrong_shape(model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 3\) but input_ids has \(1, 5\)"):
        generate(model, _ids(), attention_mask=torch.ones(1, 3, dtype=torch.long))


def test_sampling_parameters_without_sampling(model):
    with pytest.raises(ValueError, match="top_p only apply when sampling"):
        generate(model, _ids(), top_p=0.9)
    with pytest.raises(ValueError, match=r"top_p=1.5 is outside \(0.0, 1.0\]"):
        generate(model, _ids(), do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match=r"temperature=0.0 is outside \[1e-06"):
        generate(model, _ids(), do_sample=True, temperature=0)
    for value in (1e-45, float("inf"), float("nan"), "0.7"):
        with pytest.raises(ValueError, match="temperature="):
            generate(model, _ids(), do_sample=True, temperature=value)
    with pytest.raises(ValueError, match="seed='abc' must be an integer"):
        generate(model, _ids(), do_sample=True, seed="abc")
    with pytest.raises(ValueError, match="repetition_penalty='1.2' must be a number"):
        generate(model, _ids(), repetition_penalty="1.2")
    with pytest.raises(
        ValueError, match=r"'max_new_token' is not a decoding setting\. Did you mean 'max_new_tokens'"
    ):
        generate(model, _ids(), max_new_token=3)


def test_unknown_strategy_and_parameter():
    with pytest.raises(ValueError, match=r"strategy='finall' is not known\. Did you mean 'final'"):
        strategy_from_name("finall")
    with pytest.raises(ValueError, match=r"no parameter 'layr'\. Did you mean 'layer'"):
        strategy_from_name("layer", layr=3)
    with pytest.raises(ValueError, match="no 'name'"):
        Strategy.from_dict({"layer": 3})


def test_strategy_round_trip_and_cli_values():
    s = strategy_from_name("layer", **parse_assignments(["layer=-2"]))
    assert s == SingleLayer(layer=-2)
    assert Strategy.from_dict(s.to_dict()) == s
    assert Strategy.from_dict(FinalLayer().to_dict()) == FinalLayer()
    assert parse_assignments(["layers=high", "alpha=0.1", "w=1,2", "flag=true"]) == {
        "layers": "high",
        "alpha": 0.1,
        "w": [1, 2],
        "flag": True,
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_assignments(["alpha"])


def test_strategy_is_an_object_or_a_spec(model):
    by_spec = generate(model, _ids(), strategy="layer:layer=2", max_new_tokens=4, eos_token_id=[])
    by_object = generate(model, _ids(), strategy=SingleLayer(layer=2), max_new_tokens=4, eos_token_id=[])
    assert torch.equal(by_spec.sequences, by_object.sequences)
    with pytest.raises(TypeError, match="strategy must be a lenssample Strategy"):
        generate(model, _ids(), strategy=3)
    with pytest.raises(TypeError, match="pass it as schedule= instead"):
        generate(model, _ids(), strategy=lenssample.EarlyExit())
    with pytest.raises(ValueError, match=r"strategy='dolla' is not known\. Did you mean 'dola'"):
        generate(model, _ids(), strategy="dolla:layers=high")
