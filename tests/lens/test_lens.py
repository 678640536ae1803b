"""The logit lens: layer L is the model's own logits; layer i < L is unembed(final_norm(hidden_states[i]))."""

from __future__ import annotations

import pytest
import torch

from lenssample import LogitLens, apply_lens, register_adapter
from lenssample.model.adapters import ADAPTERS, Adapter, adapter_for, model_parts
from lenssample.model.capture import run_layers
from lenssample.model.surgery import truncated_blocks
from tests.conftest import ARCHITECTURES, LAYERS, VOCAB, make_tiny_model

REQUIRED = {
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gpt2",
    "gpt_neox",
    "opt",
    "phi3",
}


def test_adapter_table_covers_required_architectures():
    assert REQUIRED <= set(ADAPTERS)
    assert REQUIRED <= set(ARCHITECTURES)


def _ids(batch=2, seq=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, seq), generator=g)


def test_lens_at_final_layer_equals_model_logits(tiny_model):
    ids = _ids()
    with torch.no_grad():
        expected = tiny_model(ids).logits
    out = apply_lens(tiny_model, ids, layers=[LAYERS])
    assert out.logits.shape == (2, 7, 1, VOCAB)
    torch.testing.assert_close(out.logits[:, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_lens_at_intermediate_layers_equals_hand_computation(tiny_model):
    ids = _ids()
    parts = model_parts(tiny_model)
    with torch.no_grad():
        hf = tiny_model(ids, output_hidden_states=True).hidden_states  # [0] embeddings, [i] after i blocks
    layers = list(range(LAYERS))  # HF's hidden_states[L] is already normed: compare layers < L by hand
    normed = apply_lens(tiny_model, ids, layers=layers)
    raw = apply_lens(tiny_model, ids, layers=layers, lens=LogitLens(tiny_model, apply_final_norm=False))
    for j, layer in enumerate(layers):
        h = hf[layer]
        with torch.no_grad():
            pre = parts.final_norm(h) if parts.final_norm is not None else h
            if parts.pre_unembed is not None:
                pre, h = parts.pre_unembed(pre), parts.pre_unembed(h)
            want_normed, want_raw = parts.unembed(pre), parts.unembed(h)
            if parts.logits_transform is not None:
                want_normed, want_raw = parts.logits_transform(want_normed), parts.logits_transform(want_raw)
        torch.testing.assert_close(normed.logits[:, :, j], want_normed, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(raw.logits[:, :, j], want_raw, rtol=1e-5, atol=1e-5)
    # The randomised norm makes the two lenses differ: a missing norm could not pass the first comparison.
    assert not torch.allclose(normed.logits, raw.logits, atol=1e-3)


def test_lens_without_norm_still_gives_model_logits_at_final_layer(tiny_model):
    ids = _ids()
    with torch.no_grad():
        expected = tiny_model(ids).logits
    out = apply_lens(tiny_model, ids, layers=[0, LAYERS], lens=LogitLens(tiny_model, apply_final_norm=False))
    torch.testing.assert_close(out.logits[:, :, 1], expected, rtol=1e-5, atol=1e-5)


def test_positions_and_layer_order_are_respected():
    model = make_tiny_model("llama")
    ids = _ids()
    full = apply_lens(model, ids)
    assert full.logits.shape == (2, 7, LAYERS + 1, VOCAB)
    part = apply_lens(model, ids, layers=[3, 1], positions=[-1, 2])
    assert part.positions == (6, 2) and part.layers == (3, 1)
    torch.testing.assert_close(part.logits[:, 0, 0], full.logits[:, 6, 3])
    torch.testing.assert_close(part.logits[:, 1, 1], full.logits[:, 2, 1])
    counted_from_the_end = apply_lens(model, ids, layers=[-1, -LAYERS - 1], positions=[2])  # as strategies count
    assert counted_from_the_end.layers == (LAYERS, 0)
    torch.testing.assert_close(counted_from_the_end.logits[:, 0], full.logits[:, 2, [LAYERS, 0]])


def test_only_needed_blocks_run():
    model = make_tiny_model("llama")
    parts = model_parts(model)
    calls = []
    handles = [
        b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(parts.blocks)
    ]
    run_layers(model, _ids(), [0, 2], use_cache=False)
    for h in handles:
        h.remove()
    assert calls == [0, 1]
    assert len(parts.blocks) == LAYERS  # restored


def test_truncated_blocks_restores_after_exception():
    model = make_tiny_model("gpt2")
    parts = model_parts(model)
    original = model.transformer.h
    with pytest.raises(RuntimeError), truncated_blocks(parts, 1):
        assert len(model.transformer.h) == 1
        raise RuntimeError("boom")
    assert model.transformer.h is original


def test_layer_out_of_range_is_a_clear_error():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match=r"layers contains 9.*0\.\.4"):
        apply_lens(model, _ids(), layers=[9])
    with pytest.raises(ValueError, match=r"layers contains -6.*-1\.\.-5 count from the end"):
        apply_lens(model, _ids(), layers=[-6])
    with pytest.raises(ValueError, match="positions contains 50"):
        apply_lens(model, _ids(), positions=[50])


def test_unsupported_architecture_lists_supported_and_how_to_register():
    class Cfg:
        model_type = "lamma"

    with pytest.raises(ValueError, match=r"'lamma' is not supported.*Did you mean 'llama'.*register_adapter"):
        adapter_for(Cfg())


def test_register_adapter_refuses_silent_overwrite():
    with pytest.raises(ValueError, match="already has an adapter"):
        register_adapter(
            "llama", Adapter(base="model", blocks="layers", final_norm="norm", unembed="lm_head")
        )


def test_opt_with_projection_between_norm_and_unembedding():
    model = make_tiny_model("opt", word_embed_proj_dim=16)
    assert model_parts(model).pre_unembed is not None
    ids = _ids()
    with torch.no_grad():
        expected = model(ids).logits
    torch.testing.assert_close(
        apply_lens(model, ids, layers=[LAYERS]).logits[:, :, 0], expected, rtol=1e-5, atol=1e-5
    )


def test_few_row_unembedding_fast_paths_equal_the_module():
    from lenssample.lens.base import unembed

    for arch in ["llama", "gpt_neox", "opt"]:
        model = make_tiny_model(arch)
        parts = model_parts(model)
        h = torch.randn(2, 3, HIDDEN_FOR_TEST)
        with torch.inference_mode():
            one = unembed(parts, h[:1, :1])  # one row: transposed copy
            torch.testing.assert_close(one, parts.unembed(h[:1, :1]), rtol=1e-5, atol=1e-5)
            few = unembed(parts, h)  # six rows: W @ x.T
            torch.testing.assert_close(few, parts.unembed(h), rtol=1e-5, atol=1e-5)
            assert few.shape == (2, 3, VOCAB)
            # contiguous: the strategies' reductions over the vocabulary were 4-10x slower on a transposed view
            assert few.is_contiguous() and one.is_contiguous()
        assert "_lenssample_unembed_t" in model.__dict__


HIDDEN_FOR_TEST = 32


def test_embedding_layer_alone():
    model = make_tiny_model("gemma")
    ids = _ids()
    only = apply_lens(model, ids, layers=[0])
    both = apply_lens(model, ids, layers=[0, LAYERS])
    torch.testing.assert_close(only.logits[:, :, 0], both.logits[:, :, 0])
