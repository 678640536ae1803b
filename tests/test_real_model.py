"""Invariants on the real default model (SmolLM2-135M-Instruct), loaded offline from the embedded GGUF."""

from __future__ import annotations

import pytest
import torch

from lenssample import FinalLayer, apply_lens, generate, score
from lenssample.api import decoder
from lenssample.model.adapters import model_parts

pytestmark = pytest.mark.real

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea,"]


def test_default_model_shape(real_model):
    model, tokenizer = real_model
    parts = model_parts(model)
    assert model.config.model_type == "llama" and parts.num_layers == 30
    assert len(tokenizer) <= parts.vocab_size == 49152


def test_lens_at_final_layer_equals_logits(real_model):
    model, tokenizer = real_model
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    out = apply_lens(model, ids, layers=[10, 30])
    torch.testing.assert_close(out.logits[:, :, 1], logits, rtol=1e-4, atol=1e-4)
    # intermediate layer: the hand computation with HF's (pre-norm) hidden state
    with torch.no_grad():
        h10 = model(ids, output_hidden_states=True).hidden_states[10]
        want = model.lm_head(model.model.norm(h10))
    torch.testing.assert_close(out.logits[:, :, 0], want, rtol=1e-4, atol=1e-4)


def test_final_layer_greedy_equals_model_generate_single_and_batched(real_model):
    model, tokenizer = real_model
    tokenizer.padding_side = "left"
    enc = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model.generate(**enc, max_new_tokens=16, do_sample=False)
    ours = generate(model, enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=16)
    assert torch.equal(ours.sequences, theirs)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            single = model.generate(ids, max_new_tokens=16, do_sample=False)
        mine = generate(model, prompt, tokenizer=tokenizer, max_new_tokens=16)
        assert torch.equal(mine.sequences, single)
        with torch.no_grad():
            hf_custom = model.generate(ids, max_new_tokens=16, custom_generate=decoder(FinalLayer()))
        assert torch.equal(hf_custom, single)


def test_final_layer_score_is_model_loss(real_model):
    model, tokenizer = real_model
    ids = tokenizer(PROMPTS[1] + " there lived an old fisherman.", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    out = score(model, ids)
    torch.testing.assert_close(-out.token_log_probs.mean(), loss, rtol=1e-4, atol=1e-4)


def test_text_streamer_works(real_model, capsys):
    from transformers import TextStreamer

    model, tokenizer = real_model
    out = generate(model, PROMPTS[0], tokenizer=tokenizer, max_new_tokens=6, streamer=TextStreamer(tokenizer))
    printed = capsys.readouterr().out
    assert out.texts(tokenizer)[0].strip() in printed


def test_stop_strings(real_model):
    model, tokenizer = real_model
    free = generate(model, PROMPTS[0], tokenizer=tokenizer, max_new_tokens=12).texts(tokenizer)[0]
    assert "." in free
    out = generate(model, PROMPTS[0], tokenizer=tokenizer, max_new_tokens=12, stop_strings=".")
    text = out.texts(tokenizer)[0]
    assert text.endswith(".") and len(text) <= len(free)


def test_compiled_dola_equals_eager_on_a_padded_batch(real_model):
    model, tok = real_model
    prompts = ["The capital of France is", "Write one sentence about the sea and the sky."]
    kwargs = dict(tokenizer=tok, max_new_tokens=8, eos_token_id=[])
    eager = generate(model, prompts, "dola:layers=high", **kwargs)
    fast = generate(model, prompts, "dola:layers=high", compile=True, **kwargs)
    assert eager.attention_mask is not None and not bool(eager.attention_mask.all())  # one row is padded
    assert torch.equal(fast.sequences, eager.sequences)
    assert torch.equal(fast.trace.info["premature_layer"], eager.trace.info["premature_layer"])
