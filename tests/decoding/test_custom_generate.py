"""Streamers on the ``model.generate(custom_generate=decoder(...))`` path: transformers 5 does not hand the streamer
to a callable ``custom_generate``, so the decoder finds it. The streamer gets the prompt once, every new token in
order, and ``end()`` (a ``TextIteratorStreamer`` consumer would otherwise wait forever)."""

from __future__ import annotations

import threading

import pytest
import torch

from lenssample import generate
from lenssample.api import decoder
from tests.conftest import VOCAB, make_tiny_model


class Recorder:
    """A streamer that keeps what it receives."""

    def __init__(self):
        self.chunks, self.ended = [], 0

    def put(self, value):
        self.chunks.append(value.tolist())

    def end(self):
        self.ended += 1


@pytest.mark.parametrize("spec", ["final", "dola:layers=[0,2]", "ensemble"])
def test_streamer_reaches_the_callable_decoder(spec):
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(1))
    recorder = Recorder()
    with torch.no_grad():
        sequences = model.generate(
            ids, max_new_tokens=6, do_sample=False, custom_generate=decoder(spec), streamer=recorder
        )
    ours = generate(model, ids, spec, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(sequences, ours.sequences)
    assert recorder.chunks[0] == ids.tolist()  # the prompt, once
    assert [chunk[0] for chunk in recorder.chunks[1:]] == sequences[0, 5:].tolist()
    assert recorder.ended == 1


def test_streamer_with_a_batch_is_refused_on_the_callable_path():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="streamer"), torch.no_grad():
        model.generate(ids, max_new_tokens=2, custom_generate=decoder(), streamer=Recorder())


def test_beam_search_is_refused_and_unreturned_outputs_are_named():
    """Found by a probe: num_beams=2 returned two greedy copies of one row (transformers expands the prompt per beam
    before calling the decoder); output_scores=True returned no scores without a word."""
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="num_beams=2: lenssample's decoder picks one token per step"), torch.no_grad():
        model.generate(ids, max_new_tokens=2, num_beams=2, custom_generate=decoder("dola:layers=[0,2]"))
    with pytest.warns(UserWarning, match="output_scores: lenssample's decoder returns the sequences only"), \
            torch.no_grad():  # fmt: skip
        out = model.generate(ids, max_new_tokens=2, return_dict_in_generate=True, output_scores=True,
                             custom_generate=decoder())  # fmt: skip
    assert out.sequences.shape == (1, 7)


@pytest.mark.real
def test_text_streamers_on_the_default_model(real_model, capsys):
    from transformers import TextIteratorStreamer, TextStreamer

    model, tokenizer = real_model
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        sequences = model.generate(
            ids,
            max_new_tokens=8,
            custom_generate=decoder("dola:layers=high"),
            streamer=TextStreamer(tokenizer),
        )
    text = tokenizer.decode(sequences[0, ids.shape[1] :], skip_special_tokens=True)
    assert text.strip() and text.strip() in capsys.readouterr().out

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=60, skip_special_tokens=True)
    worker = threading.Thread(
        target=model.generate,
        args=(ids,),
        kwargs={"max_new_tokens": 8, "custom_generate": decoder("dola:layers=high"), "streamer": streamer},
    )
    with torch.no_grad():
        worker.start()
        received = "".join(streamer)  # ends only if end() reached the streamer
    worker.join(timeout=60)
    assert not worker.is_alive() and received.strip() == text.strip()
