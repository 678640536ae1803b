"""The compiled step (``compile=True``): the same tokens as the eager loop, one compilation reused, a fallback.

Compiling costs seconds per graph, so the cases are few and the models tiny; the default model is covered in
``tests/test_real_model.py``.
"""

from __future__ import annotations

import pytest
import torch

import lenssample
from lenssample.decoding import compiled
from tests.conftest import make_tiny_model

CASES = [  # (architecture, strategy, batch); a batch of 2 has a left-padded row
    ("llama", "final", 1),
    ("llama", "dola:layers=[2,3]", 2),
    ("gpt2", "ensemble:weights=uniform", 1),
    ("gemma3_text", "contrast:amateur_layer=2", 2),
]


def _prompt(batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 96, (batch, 7), generator=generator)
    if batch == 1:
        return ids, None
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding of the first row
    ids[0, :3] = 0
    return ids, mask


@pytest.mark.parametrize(("arch", "spec", "batch"), CASES)
def test_compiled_tokens_equal_eager(arch, spec, batch):
    # gemma3's sliding window (8) is shorter than prompt + new tokens: the window must hold in the static cache too.
    model = make_tiny_model(arch)
    ids, mask = _prompt(batch)
    kwargs = dict(attention_mask=mask, max_new_tokens=12, eos_token_id=[])
    eager = lenssample.generate(model, ids, spec, **kwargs)
    fast = lenssample.generate(model, ids, spec, compile=True, **kwargs)
    assert torch.equal(fast.sequences, eager.sequences)
    assert fast.trace.compile_seconds is not None and fast.trace.compile_seconds > 0
    assert eager.trace.compile_seconds is None
    for key, value in eager.trace.info.items():  # e.g. DoLa's premature layer, step by step
        assert torch.equal(fast.trace.info[key], value)


def test_one_compilation_reused_across_tokens_and_calls():
    from torch._dynamo.utils import counters

    model = make_tiny_model("llama", seed=1)
    ids = torch.randint(3, 96, (1, 5), generator=torch.Generator().manual_seed(1))
    counters.clear()
    first = lenssample.generate(
        model, ids, "dola:layers=[1,2]", compile=True, max_new_tokens=20, eos_token_id=[]
    )
    frames = counters["stats"]["unique_graphs"]
    assert frames >= 1
    # Another prompt of another length in the same length bucket: no new graph, the step is reused.
    other = torch.randint(3, 96, (1, 9), generator=torch.Generator().manual_seed(2))
    second = lenssample.generate(
        model, other, "dola:layers=[1,2]", compile=True, max_new_tokens=20, eos_token_id=[]
    )
    assert counters["stats"]["unique_graphs"] == frames, "the step recompiled for a new token or a new call"
    assert first.trace.compile_seconds > 0 and second.trace.compile_seconds == 0.0
    eager = lenssample.generate(model, other, "dola:layers=[1,2]", max_new_tokens=20, eos_token_id=[])
    assert torch.equal(second.sequences, eager.sequences)


def test_sampling_with_a_seed_matches_eager():
    model = make_tiny_model("qwen2")
    ids = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(3))
    kwargs = dict(do_sample=True, temperature=0.9, top_k=20, seed=7, max_new_tokens=10, eos_token_id=[])
    eager = lenssample.generate(model, ids, "ensemble:weights=uniform", **kwargs)
    fast = lenssample.generate(model, ids, "ensemble:weights=uniform", compile=True, **kwargs)
    assert torch.equal(fast.sequences, eager.sequences)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C compiler found")

        return run

    monkeypatch.setattr(compiled.torch, "compile", broken)
    model = make_tiny_model("llama", seed=2)
    ids = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(4))
    eager = lenssample.generate(model, ids, "final", max_new_tokens=8, eos_token_id=[])
    with pytest.warns(RuntimeWarning, match="torch.compile failed") as caught:
        fast = lenssample.generate(model, ids, "final", compile=True, max_new_tokens=8, eos_token_id=[])
    assert len([w for w in caught if "compile" in str(w.message)]) == 1
    assert torch.equal(fast.sequences, eager.sequences)


def test_an_architecture_without_a_static_cache_decodes_eagerly(monkeypatch):
    def unavailable(*args, **kwargs):
        raise compiled.CompileUnavailable("no static KV cache for this model")

    monkeypatch.setattr(compiled.CompiledStep, "__init__", unavailable)
    model = make_tiny_model("opt")
    ids = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(5))
    eager = lenssample.generate(model, ids, "final", max_new_tokens=6, eos_token_id=[])
    with pytest.warns(RuntimeWarning, match="decoding eagerly"):
        fast = lenssample.generate(model, ids, "final", compile=True, max_new_tokens=6, eos_token_id=[])
    assert torch.equal(fast.sequences, eager.sequences)
    assert fast.trace.compile_seconds is None


def test_compile_is_refused_where_it_cannot_apply():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="compile=True decodes with a static KV cache"):
        lenssample.generate(model, torch.tensor([[5, 6]]), compile=True, use_cache=False)
    with pytest.raises(ValueError, match="drop compile=True"):
        lenssample.generate(model, torch.tensor([[5, 6]]), schedule="early-exit", compile=True)
    with pytest.raises(ValueError, match="compile"):
        lenssample.generate(model, torch.tensor([[5, 6]]), compile="yes")


def test_a_bfloat16_lens_is_close_to_float32_and_compiles_alike():
    model = make_tiny_model("llama", seed=4)
    ids = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(6))
    kwargs = dict(max_new_tokens=8, eos_token_id=[])
    eager = lenssample.generate(model, ids, "dola:layers=[1,2]", lens_dtype="bfloat16", **kwargs)
    fast = lenssample.generate(model, ids, "dola:layers=[1,2]", lens_dtype="bfloat16", compile=True, **kwargs)
    assert torch.equal(fast.sequences, eager.sequences)


def test_weights_edited_after_compiling_are_seen():
    # The CPU step freezes the weights into its graph: an in-place edit must rebuild it, not decode the old weights.
    model = make_tiny_model("llama", seed=5)
    ids = torch.randint(3, 96, (1, 6), generator=torch.Generator().manual_seed(8))
    kwargs = dict(max_new_tokens=8, eos_token_id=[])
    before = lenssample.generate(model, ids, "final", compile=True, **kwargs)
    (step_before,) = [step for _, step in model.__dict__["_lenssample_compiled_steps"].values()]
    with torch.no_grad():
        for block in model.model.layers:
            block.mlp.down_proj.weight.mul_(-3.0)
    after = lenssample.generate(model, ids, "final", compile=True, **kwargs)
    (step_after,) = [step for _, step in model.__dict__["_lenssample_compiled_steps"].values()]
    assert step_after is not step_before  # rebuilt, and the old one (with its packed weights) dropped
    assert torch.equal(after.sequences, lenssample.generate(model, ids, "final", **kwargs).sequences)
    assert not torch.equal(after.sequences, before.sequences)  # the edit changes this model's greedy tokens
