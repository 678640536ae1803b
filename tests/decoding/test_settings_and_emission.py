"""Decoding settings (validated on construction, built with overrides, transformers' processors in order) and the
one emission policy (EOS, stopping criteria, padding, streamer, per-row finish) that every loop and schedule uses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lenssample import DecodingSettings, generate
from lenssample.decoding.emission import EmissionPolicy
from tests.conftest import VOCAB, make_tiny_model
from tests.decoding.test_custom_generate import Recorder


def test_settings_are_frozen_and_built_with_overrides():
    base = DecodingSettings(max_new_tokens=5, do_sample=True, temperature=0.7, seed=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.max_new_tokens = 6  # type: ignore[misc]
    changed = DecodingSettings.build(base, top_k=10)
    assert (changed.top_k, changed.temperature, base.top_k) == (10, 0.7, None)
    assert DecodingSettings.build({"max_new_tokens": 4}, eos_token_id=7).eos_token_id == (7,)
    assert DecodingSettings.build(None).max_new_tokens == DecodingSettings().max_new_tokens
    with pytest.raises(ValueError, match="Did you mean 'temperature'"):
        DecodingSettings.build(base, temprature=0.5)
    with pytest.raises(TypeError, match="DecodingSettings"):
        DecodingSettings.build(3)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"do_sample": True, "temperature": 1e-45}, "temperature"),
        ({"do_sample": True, "temperature": float("inf")}, "temperature"),
        ({"do_sample": True, "top_p": 0.0}, "top_p"),
        ({"do_sample": True, "top_k": 0}, "top_k"),
        ({"repetition_penalty": "1.2"}, "repetition_penalty"),
        ({"seed": "abc"}, "seed"),
        ({"eos_token_id": [-1]}, "eos_token_id"),
        ({"stop_strings": [""]}, "stop_strings"),
        ({"temperature": 0.5}, "do_sample=True"),
    ],
)
def test_settings_refuse_bad_values(values, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DecodingSettings(**values)


def test_processors_follow_model_generate_order():
    settings = DecodingSettings(
        do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2
    )
    kinds = [type(p) for p in settings.processors()]
    assert kinds == [
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
        MinPLogitsWarper,
    ]
    assert [type(p) for p in DecodingSettings(repetition_penalty=1.2).processors()] == [
        RepetitionPenaltyLogitsProcessor
    ]
    assert len(DecodingSettings().processors()) == 0


def test_generate_takes_a_settings_object_and_keyword_overrides():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 4), generator=torch.Generator().manual_seed(2))
    settings = DecodingSettings(max_new_tokens=5, eos_token_id=())
    a = generate(model, ids, settings=settings)
    b = generate(model, ids, max_new_tokens=5, eos_token_id=[])
    assert torch.equal(a.sequences, b.sequences) and a.new_tokens.shape[1] == 5
    assert generate(model, ids, settings=settings, max_new_tokens=3).new_tokens.shape[1] == 3


def _policy(**values):
    return EmissionPolicy(
        **{"max_new_tokens": 4, "eos_token_ids": torch.tensor([9]), "pad_token_id": 0, **values}
    )


def test_emitter_finishes_rows_pads_and_streams_once():
    recorder = Recorder()
    emitter = _policy(streamer=recorder).start(torch.tensor([[5, 6]]))
    assert not emitter.emit(torch.tensor([7]))
    assert emitter.emit(torch.tensor([9]))  # EOS: done, stream ended
    assert emitter.new_tokens.tolist() == [[7, 9]] and recorder.chunks == [[[5, 6]], [7], [9]]
    emitter.end()
    assert recorder.ended == 1
    batch = _policy().start(torch.tensor([[1], [2]]))
    batch.emit(torch.tensor([9, 3]))  # row 0 finishes; row 1 goes on and row 0 is padded
    batch.emit(torch.tensor([4, 5]))
    assert batch.new_tokens.tolist() == [[9, 0], [3, 5]] and batch.unfinished.tolist() == [False, True]
    assert batch.remaining == 2 and not batch.done


def test_emit_many_stops_at_the_budget_and_the_criteria():
    class StopAtSix(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == 6

    emitter = _policy(eos_token_ids=None, max_new_tokens=3).start(torch.tensor([[1]]))
    assert emitter.emit_many([2, 3, 4, 5]) == 3 and emitter.done
    assert emitter.new_tokens.tolist() == [[2, 3, 4]]
    criteria = StoppingCriteriaList([StopAtSix()])
    emitter = _policy(eos_token_ids=None, stopping_criteria=criteria).start(torch.tensor([[1]]))
    assert emitter.emit_many([2, 6, 7]) == 2 and emitter.done
    assert emitter.with_tokens([8]).tolist() == [[1, 2, 6, 8]]


def test_stop_strings_work_with_a_tokenizer_transformers_cannot_map():
    """Fresh probe: transformers' StopStringCriteria ends in "substring not found" for a word-level tokenizer (it
    spells each token after a fixed prefix the tokenizer cannot encode). The decoded-text fallback stops at the
    first stop string, as the real tokenizers' criterion does."""
    from transformers import StopStringCriteria

    from lenssample.decoding.emission import DecodedStopStrings, stop_string_criteria
    from tests.conftest import make_tiny_tokenizer

    model, tok = make_tiny_model("llama"), make_tiny_tokenizer()
    with pytest.raises(ValueError, match="substring not found"):
        StopStringCriteria(tokenizer=tok, stop_strings=["t7"])
    assert isinstance(stop_string_criteria(tok, ["t7"]), DecodedStopStrings)
    free = generate(model, "t5 t6", tokenizer=tok, max_new_tokens=8, eos_token_id=[])
    words = tok.decode(free.sequences[0, free.prompt_length :]).split()
    stop = words[3]  # a word generated at the fourth step (or earlier, if it is repeated)
    out = generate(model, "t5 t6", tokenizer=tok, max_new_tokens=8, eos_token_id=[], stop_strings=[stop])
    made = tok.decode(out.sequences[0, out.prompt_length :]).split()
    assert made == words[: words.index(stop) + 1]
    never = generate(model, "t5 t6", tokenizer=tok, max_new_tokens=8, eos_token_id=[], stop_strings=["é✓"])
    assert torch.equal(never.sequences, free.sequences)
