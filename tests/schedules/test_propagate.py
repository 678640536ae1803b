"""Early exit with ``skipped_kv="propagate"`` (CALM's state propagation).

The reference for the copied state is built independently here: a plain full-depth forward pass of the model in
which every skipped block's output is replaced by its input (a forward hook), so the hidden state of layers above
the exit is the exited one, each skipped block's attention computes its keys/values from it, and the final logits
are the lens at the exit layer. Tokens and every cache tensor must equal the propagate schedule's.
"""

from __future__ import annotations

import argparse
import dataclasses
from unittest import mock

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.cache_utils import Cache

import lenssample
from lenssample.api import decoder
from lenssample.cli import main
from lenssample.cli.common import schedule_from_args
from lenssample.model.adapters import ADAPTERS, block_attentions, model_parts
from lenssample.schedules import EarlyExit, Entropy, MaxProb
from tests.conftest import _COMMON, LAYERS, TINY_CONFIGS, make_tiny_model
from tests.schedules.test_early_exit import _Boom  # raises on its third call

NEW = 8
MIXED = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
# Architectures and the overrides that make them interesting: Gemma-3 with mixed layer types (different rotary
# embeddings and masks per type, a sliding window shorter than the generation), OPT both pre- and post-norm.
CASES = {
    "llama": {},
    "gemma3_text": {"layer_types": MIXED},
    "gpt2": {},
    "gpt_neox": {},
    "opt": {},
    "opt_post_norm": {"do_layer_norm_before": False},
    "qwen3": {},
    "gemma2": {},
    "olmo2": {},
    "granite": {},
    "cohere": {},
}
# Tiny configs of architectures the shared fixture does not build.
EXTRA_CONFIGS = {
    "olmo2": dict(_COMMON, num_key_value_heads=2),
    "granite": dict(_COMMON, num_key_value_heads=2, logits_scaling=2.0, residual_multiplier=0.5),
    "cohere": dict(_COMMON, num_key_value_heads=2, logit_scale=0.5),
}


def _model(case: str):
    arch = "opt" if case.startswith("opt") else case
    # The shared table is extended only while this model is built.
    with mock.patch.dict(TINY_CONFIGS, {arch: EXTRA_CONFIGS[arch]} if arch in EXTRA_CONFIGS else {}):
        return make_tiny_model(arch, **CASES[case])


def _lowest_min_layer(model) -> int:
    """The lowest min_layer that leaves a block of every layer type below it (1 without layer_types)."""
    types = getattr(model.config, "layer_types", None) or ["one"] * LAYERS
    return max(types.index(t) for t in set(types)) + 1


def _ids(seed: int = 0, length: int = 6) -> torch.Tensor:
    return torch.randint(3, 90, (1, length), generator=torch.Generator().manual_seed(seed))


def _gen(model, ids, max_new_tokens=NEW, **kw):
    return lenssample.generate(model, ids, max_new_tokens=max_new_tokens, eos_token_id=[], **kw)


def _propagate(**kw) -> EarlyExit:
    return EarlyExit(skipped_kv="propagate", **kw)


class _CacheWatch:
    """A pre-hook on block 0 that records the cache object of every pass and each cache layer's length then."""

    def __init__(self, model):
        self.cache = None
        self.lengths: list[list[int]] = []
        self.handle = model_parts(model).blocks[0].register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        caches = [v for v in (*args, *kwargs.values()) if isinstance(v, Cache)]
        if caches:
            self.cache = caches[0]
            self.lengths.append([layer.get_seq_length() for layer in self.cache.layers])

    def remove(self):
        self.handle.remove()


def copied_state_reference(model, ids: torch.Tensor, new_tokens: int, exit_layer: int):
    """Greedy tokens and cache of "full depth, but every block from ``exit_layer`` on passes its input through".

    The prompt pass runs the full model (as the schedule's does); every later pass exits at ``exit_layer``.
    """
    parts = model_parts(model)

    def passthrough(_module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    tokens = []
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        tokens.append(int(out.logits[0, -1].argmax()))
        handles = [
            parts.blocks[index].register_forward_hook(passthrough, with_kwargs=True)
            for index in range(exit_layer, parts.num_layers)
        ]
        try:
            for _ in range(new_tokens - 1):
                out = model(torch.tensor([[tokens[-1]]]), use_cache=True, **{parts.cache_kwarg: cache})
                cache = getattr(out, "cache", None) or out.past_key_values
                tokens.append(int(out.logits[0, -1].argmax()))
        finally:
            for handle in handles:
                handle.remove()
    return tokens, cache


@pytest.mark.parametrize("case", ["llama", "gemma3_text", "gpt2", "gpt_neox", "opt"])
def test_never_confident_and_exit_at_L_equal_final_layer(case):
    model = _model(case)
    low = _lowest_min_layer(model)
    for seed in (0, 1):
        ids = _ids(seed)
        reference = _gen(model, ids)
        never = _gen(model, ids, schedule=_propagate(measure=MaxProb(threshold=1.0), min_layer=low))
        at_l = _gen(model, ids, schedule=_propagate(measure=MaxProb(threshold=0.0), min_layer=LAYERS))
        assert torch.equal(never.sequences, reference.sequences)
        assert torch.equal(at_l.sequences, reference.sequences)
        assert (never.trace.info["exit_layer"] == LAYERS).all() and never.trace.blocks_per_step == LAYERS
        assert (never.trace.info["propagated"] == 0).all()


@pytest.mark.parametrize("case", list(CASES))
def test_always_confident_equals_copied_state_reference(case):
    model = _model(case)
    ids = _ids(2)
    for min_layer in range(_lowest_min_layer(model), LAYERS):
        watch = _CacheWatch(model)
        try:
            out = _gen(model, ids, schedule=_propagate(measure=MaxProb(threshold=0.0), min_layer=min_layer))
        finally:
            watch.remove()
        tokens, cache = copied_state_reference(model, ids, NEW, min_layer)
        assert out.new_tokens[0].tolist() == tokens
        # The exits really were early, so the reference is not plain decoding in disguise.
        assert out.trace.info["exit_layer"][0].tolist() == [LAYERS] + [min_layer] * (NEW - 1)
        assert out.trace.info["propagated"][0].tolist() == [0] + [LAYERS - min_layer] * (NEW - 1)
        assert (out.trace.info["pending"] == 0).all()
        # Every cache layer holds exactly the processed positions at the start of every pass, and at the end.
        prompt = ids.shape[1]
        assert watch.lengths == [[0] * LAYERS] + [[prompt + step] * LAYERS for step in range(NEW - 1)]
        assert [layer.get_seq_length() for layer in watch.cache.layers] == [prompt + NEW - 1] * LAYERS
        for ours, theirs in zip(watch.cache.layers, cache.layers, strict=True):
            assert ours.keys.shape == theirs.keys.shape
            torch.testing.assert_close(ours.keys, theirs.keys, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours.values, theirs.values, rtol=1e-5, atol=1e-6)


def test_exact_up_to_the_exit_approximate_above():
    """Against a full-depth pass over the same tokens: keys/values of cache layers up to the exit are exact (block
    ``e``'s true input *is* the exited state), those of the higher skipped layers differ at the generated positions
    (so the cache comparisons above can fail)."""
    model = _model("llama")
    ids = _ids(2)
    min_layer = 2
    watch = _CacheWatch(model)
    try:
        out = _gen(model, ids, schedule=_propagate(measure=MaxProb(threshold=0.0), min_layer=min_layer))
    finally:
        watch.remove()
    _, exact = copied_state_reference(model, out.sequences[:, :-1], 1, LAYERS)
    prompt = ids.shape[1]
    for layer, (ours, theirs) in enumerate(zip(watch.cache.layers, exact.layers, strict=True)):
        torch.testing.assert_close(ours.keys[:, :, :prompt], theirs.keys[:, :, :prompt])
        generated = ours.values[:, :, prompt:], theirs.values[:, :, prompt:]
        if layer <= min_layer:
            torch.testing.assert_close(*generated, rtol=1e-5, atol=1e-6)
        else:
            assert not torch.allclose(*generated, rtol=1e-3, atol=1e-3)


class _Count:
    def __init__(self, modules):
        self.calls = 0
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, *_):
        self.calls += 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("case, threshold", [("qwen3", 0.4), ("gpt2", 0.2)])
def test_blocks_per_token_counts_only_blocks_that_ran(case, threshold):
    model = _model(case)
    parts = model_parts(model)
    blocks = _Count(parts.blocks)
    attentions = _Count([found.attention for found in block_attentions(parts)])
    mlps = _Count([block.mlp for block in parts.blocks])
    try:
        out = _gen(model, _ids(1), schedule=_propagate(measure=MaxProb(threshold=threshold)))
    finally:
        for counter in (blocks, attentions, mlps):
            counter.remove()
    exits = out.trace.info["exit_layer"][0]
    assert len(set(exits.tolist())) >= 2 and bool((exits[1:] < LAYERS).any())  # a mixture of depths
    assert blocks.calls == mlps.calls == int(exits.sum())  # skipped MLPs never run
    assert attentions.calls == LAYERS * NEW  # every position has keys/values in every layer
    assert int(out.trace.info["propagated"].sum()) == int((LAYERS - exits).sum())
    assert out.trace.blocks_per_step == pytest.approx(float(exits.sum()) / NEW)


def _no_hooks_anywhere(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("where", ["picker", "forward", "propagation"])
def test_model_intact_after_exception(where):
    model = _model("gemma3_text")
    parts = model_parts(model)
    blocks = list(parts.blocks)
    ids = _ids(0)
    reference = _gen(model, ids)
    schedule = _propagate(measure=MaxProb(threshold=0.0), min_layer=2)
    calls = {"n": 0}

    def explode(*_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")

    handle = None
    kwargs = {}
    if where == "picker":
        kwargs["logits_processor"] = LogitsProcessorList([_Boom()])
    elif where == "forward":  # inside a pass, while the exit hooks and the kwargs capture are on
        handle = parts.blocks[0].register_forward_hook(explode)
    else:  # inside the propagation (block 3's attention runs only there after the prompt)
        handle = block_attentions(parts)[3].attention.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            _gen(model, ids, schedule=schedule, **kwargs)
    finally:
        if handle is not None:
            handle.remove()
    assert list(model_parts(model).blocks) == blocks
    assert _no_hooks_anywhere(model)
    assert torch.equal(_gen(model, ids).sequences, reference.sequences)


def test_custom_generate_equals_generate():
    model = _model("llama")
    schedule = _propagate(measure=Entropy(threshold=4.0), min_layer=2)
    a = _ids(0)
    ours = lenssample.generate(model, a, max_new_tokens=8, schedule=schedule)
    theirs = model.generate(a, max_new_tokens=8, do_sample=False, custom_generate=decoder(schedule=schedule))
    assert torch.equal(theirs, ours.sequences)


def test_bad_input(monkeypatch):
    with pytest.raises(ValueError, match=r"skipped_kv='copy'.*'recompute', 'propagate'"):
        EarlyExit(measure=MaxProb(), skipped_kv="copy")
    assert EarlyExit(measure=MaxProb()).skipped_kv == "recompute"
    assert _propagate(measure=MaxProb()).to_dict()["skipped_kv"] == "propagate"
    # Gemma-3 with a full-attention block first at index 1: min_layer=1 leaves no such block running.
    model = _model("gemma3_text")
    with pytest.raises(ValueError, match=r"min_layer=1.*'full_attention'.*min_layer >= 2"):
        _gen(model, _ids(0), schedule=_propagate(measure=MaxProb(), min_layer=1))
    # An architecture whose adapter names no attention module.
    monkeypatch.setitem(ADAPTERS, "llama", dataclasses.replace(ADAPTERS["llama"], attention=None))
    with pytest.raises(ValueError, match=r"not supported for model_type 'llama'.*skipped_kv='recompute'"):
        _gen(_model("llama"), _ids(0), schedule=_propagate(measure=MaxProb()))
    # Paths that do not fit the model.
    monkeypatch.setitem(ADAPTERS, "llama", dataclasses.replace(ADAPTERS["llama"], attention="attn"))
    with pytest.raises(ValueError, match=r"not supported for model_type 'llama'.*'attn'"):
        _gen(_model("llama"), _ids(0), schedule=_propagate(measure=MaxProb()))


def test_cli_skipped_kv(capsys):
    params = ["threshold=0.5", "min_layer=3", "skipped_kv=propagate"]
    schedule = schedule_from_args(argparse.Namespace(schedule="early-exit", schedule_params=params))
    assert schedule == _propagate(measure=MaxProb(threshold=0.5), min_layer=3)
    argv = ["generate", "hi", "--schedule", "early-exit", "--schedule-set", "skipped_kv=copy"]
    assert main(argv) == 2
    assert "skipped_kv='copy'" in capsys.readouterr().err


@pytest.mark.real
def test_real_model_propagate(real_model):
    model, tokenizer = real_model
    num_layers = model_parts(model).num_layers
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    watch = _CacheWatch(model)
    try:
        out = _gen(
            model, ids, max_new_tokens=6, schedule=_propagate(measure=MaxProb(threshold=0.0), min_layer=24)
        )
    finally:
        watch.remove()
    tokens, cache = copied_state_reference(model, ids, 6, 24)
    assert out.new_tokens[0].tolist() == tokens
    assert [layer.get_seq_length() for layer in watch.cache.layers] == [ids.shape[1] + 5] * num_layers
    torch.testing.assert_close(watch.cache.layers[-1].keys, cache.layers[-1].keys, rtol=1e-4, atol=1e-5)
