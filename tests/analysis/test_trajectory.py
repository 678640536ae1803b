"""lenssample.analysis.trajectory: every statistic against a direct computation from apply_lens / score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

import lenssample
from lenssample import Lens, LogitLens, SingleLayer, apply_lens, score, trajectory
from tests.conftest import LAYERS, VOCAB, make_tiny_model


class CharTokenizer:
    """Just enough of a tokenizer for readable tokens: id i decodes to a short string (some with whitespace)."""

    def decode(self, ids):
        return "".join(" " if i % 7 == 0 else "\n" if i % 11 == 0 else f"t{i}" for i in ids)


class ScaledLens(Lens):
    """A stand-in for a tuned lens: a translate() that changes every layer below L."""

    def translate(self, hidden, layers):
        scale = torch.tensor([0.5 + 0.1 * layer for layer in layers], dtype=hidden.dtype)
        return hidden * scale[:, None]


def _ids(seq=9, seed=3):
    return torch.randint(3, VOCAB, (seq,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("lens_cls", [LogitLens, ScaledLens])
def test_statistics_equal_direct_computation(model_type, lens_cls):
    model = make_tiny_model(model_type)
    lens = lens_cls(model)
    ids = _ids()
    traj = trajectory(model, CharTokenizer(), ids, lens=lens, top_k=4)
    seq = len(ids)
    assert traj.layers == tuple(range(LAYERS + 1)) and traj.positions == tuple(range(seq))
    assert traj.kl.shape == (LAYERS + 1, seq) and traj.topk_probs.shape == (LAYERS + 1, seq, 4)
    assert traj.lens_name == lens_cls.__name__

    log_probs = apply_lens(model, ids, lens=lens).log_probs()[0]  # [seq, layers, vocab]
    final = log_probs[:, -1]
    final_top = final.argmax(-1)
    for layer in range(LAYERS + 1):
        lp = log_probs[:, layer]
        top_p, top_id = lp.exp().max(-1)
        np.testing.assert_array_equal(traj.top_ids[layer], top_id.numpy())
        np.testing.assert_allclose(traj.top_probs[layer], top_p.numpy(), rtol=1e-5)
        # rank: where the final top token sits in this layer's sorted order (random floats: no ties)
        order = lp.argsort(dim=-1, descending=True)
        rank = (order == final_top[:, None]).float().argmax(-1) + 1
        np.testing.assert_array_equal(traj.final_rank[layer], rank.numpy())
        kl = kl_divergence(Categorical(logits=final), Categorical(logits=lp))
        np.testing.assert_allclose(traj.kl[layer], kl.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(traj.entropy[layer], Categorical(logits=lp).entropy().numpy(), rtol=1e-4)
        top_lp, top_ids = lp.topk(4, dim=-1)
        np.testing.assert_array_equal(traj.topk_ids[layer], top_ids.numpy())
        np.testing.assert_allclose(traj.topk_probs[layer], top_lp.exp().numpy(), rtol=1e-5)
        # cross-entropy of the actual next token, from teacher-forced scoring through the same lens
        nll = -lp[:-1].gather(-1, ids[1:, None])[:, 0]
        np.testing.assert_allclose(traj.xent[layer, :-1], nll.numpy(), rtol=1e-5, atol=1e-6)
        if layer > 0:  # foundation: run_layers with layers=(0,) alone captures nothing (reported)
            scored = score(model, ids, SingleLayer(layer=layer), lens=lens).token_log_probs[0]
            np.testing.assert_allclose(traj.xent[layer, :-1], -scored.numpy(), rtol=1e-4, atol=1e-5)
        assert np.isnan(traj.xent[layer, -1])
    assert np.all(traj.final_rank[-1] == 1) and np.allclose(traj.kl[-1], 0.0, atol=1e-5)
    np.testing.assert_array_equal(traj.final_ids, final_top.numpy())
    np.testing.assert_array_equal(traj.next_ids, np.r_[ids[1:].numpy(), -1])
    np.testing.assert_array_equal(traj.matches, final_top.numpy() == np.r_[ids[1:].numpy(), -1])
    assert traj.top_tokens[0, 0] == CharTokenizer().decode([traj.top_ids[0, 0]]).replace(" ", "␣").replace(
        "\n", "↵"
    )


def test_final_layer_is_the_model_and_kl_nonnegative():
    model = make_tiny_model("qwen2")
    ids = _ids(seq=12, seed=5)
    traj = trajectory(model, None, ids)
    logits = model(ids[None]).logits[0]
    np.testing.assert_array_equal(traj.top_ids[-1], logits.argmax(-1).numpy())
    assert np.all(traj.kl >= -1e-5) and np.all(traj.entropy >= -1e-5)
    assert np.all(traj.entropy <= np.log(VOCAB) + 1e-4)
    assert traj.input_tokens[0] == f"#{int(ids[0])}"  # no tokenizer: ids shown


def test_chunking_and_subsets_match_the_full_trajectory():
    model = make_tiny_model("llama")
    ids = _ids(seq=11)
    full = trajectory(model, None, ids)
    one_position = (LAYERS + 1) * VOCAB * 4 * 4
    chunked = trajectory(model, None, ids, max_chunk_bytes=2 * one_position)  # chunks of 2 positions
    for name in ("top_ids", "top_probs", "final_rank", "kl", "entropy", "xent", "topk_ids", "topk_probs"):
        # float32 products of other shapes sum in another order: equal to rounding
        np.testing.assert_allclose(getattr(chunked, name), getattr(full, name), rtol=1e-5, atol=1e-6)
    # Layers in any order, without the final layer; positions a subset (negative counts from the end).
    sub = trajectory(model, None, ids, layers=[3, 0, 2], positions=[1, 4, -1])
    assert sub.layers == (3, 0, 2) and sub.positions == (1, 4, 10)
    for name in ("top_ids", "top_probs", "final_rank", "kl", "entropy", "xent"):
        np.testing.assert_allclose(
            getattr(sub, name), getattr(full, name)[[3, 0, 2]][:, [1, 4, 10]], rtol=1e-5
        )
    np.testing.assert_array_equal(sub.next_ids, [int(ids[2]), int(ids[5]), -1])
    # A window that ends early gives the same numbers (causal model; the text after it is not run).
    early = trajectory(model, None, ids, positions=[0, 1, 2])
    np.testing.assert_allclose(early.kl, full.kl[:, :3], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(early.next_ids, ids[1:4].numpy())


def test_window_last_and_layer_summary():
    model = make_tiny_model("llama")
    ids = _ids(seq=10)
    traj = trajectory(model, None, ids)
    win = traj.window(2, 5)
    assert win.positions == (2, 3, 4) and win.kl.shape == (LAYERS + 1, 3) and win.topk_ids.shape[1] == 3
    np.testing.assert_array_equal(win.top_tokens, traj.top_tokens[:, 2:5])
    np.testing.assert_array_equal(win.next_ids, traj.next_ids[2:5])
    assert traj.window(-3).positions == (7, 8, 9) and traj.last(2).positions == (8, 9)
    assert len(win.input_ids) == 10  # the whole text is kept for context
    summary = traj.layer_summary()
    np.testing.assert_allclose(summary["kl"], traj.kl.mean(axis=1))
    np.testing.assert_allclose(summary["top1"], (traj.top_ids == traj.final_ids).mean(axis=1))
    np.testing.assert_allclose(summary["xent"], traj.xent[:, :-1].mean(axis=1))
    assert summary["top1"][-1] == 1.0
    with pytest.raises(ValueError, match="selects no position"):
        traj.window(20, 30)
    with pytest.raises(ValueError, match="last=0"):
        traj.last(0)


def test_bad_input_raises_clear_errors():
    model = make_tiny_model("llama")
    ids = _ids()
    with pytest.raises(ValueError, match="text is empty"):
        trajectory(model, CharTokenizer(), "")
    with pytest.raises(ValueError, match="no tokens"):
        trajectory(model, None, [])
    with pytest.raises(ValueError, match="tokenizer is None"):
        trajectory(model, None, "hello")
    with pytest.raises(TypeError, match="string or token ids"):
        trajectory(model, None, 3.5)
    with pytest.raises(ValueError, match="top_k=0"):
        trajectory(model, None, ids, top_k=0)
    with pytest.raises(ValueError, match="positions contains 9"):
        trajectory(model, None, ids, positions=[9])
    with pytest.raises(ValueError, match="layers contains 7"):
        trajectory(model, None, ids, layers=[7])
    with pytest.raises(ValueError, match="duplicates"):
        trajectory(model, None, ids, layers=[1, 1])
    with pytest.raises(ValueError, match="positions is empty"):
        trajectory(model, None, ids, positions=[])
    with pytest.raises(ValueError, match="different model"):
        trajectory(model, None, ids, lens=LogitLens(make_tiny_model("llama", seed=1)))


@pytest.mark.real
def test_real_model_trajectory(real_model):
    model, tokenizer = real_model
    text = "The capital of France is Paris. The capital of Germany is"
    traj = lenssample.analysis.trajectory(model, tokenizer, text, layers=[0, 15, 30], positions=[-3, -2, -1])
    ids = tokenizer(text, return_tensors="pt").input_ids
    logits = model(ids).logits[0, -3:]
    np.testing.assert_array_equal(traj.final_ids, logits.argmax(-1).numpy())
    assert traj.top_tokens[-1, -1] == "␣Berlin"
    assert traj.matches[:2].tolist() == [
        bool(traj.final_ids[0] == ids[0, -2]),
        bool(traj.final_ids[1] == ids[0, -1]),
    ]
    assert np.all(traj.kl[-1] < 1e-4) and np.all(traj.kl[0] > traj.kl[1])  # the embedding is furthest away
