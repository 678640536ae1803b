"""The decoding loop: FinalLayer greedy == model.generate, batching, caching, sampling, custom_generate."""

from __future__ import annotations

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList

import lenssample
from lenssample import FinalLayer, SingleLayer, apply_lens, generate
from lenssample.api import decoder
from tests.conftest import LAYERS, VOCAB, make_tiny_model

GEN_ARCHS = ["llama", "gpt2", "gpt_neox", "gemma2", "qwen3", "opt"]


def _left_padded(seed=3):
    """Two prompts of lengths 5 and 8, left-padded with 0."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(3, VOCAB, (5,), generator=g)
    b = torch.randint(3, VOCAB, (8,), generator=g)
    ids = torch.zeros(2, 8, dtype=torch.long)
    mask = torch.zeros(2, 8, dtype=torch.long)
    ids[0, 3:], mask[0, 3:] = a, 1
    ids[1], mask[1] = b, 1
    return ids, mask, [a, b]


def _hf_greedy(model, ids, mask=None, n=12):
    with torch.no_grad():
        return model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=None)


@pytest.mark.parametrize("arch", GEN_ARCHS)
def test_final_layer_greedy_matches_model_generate_single(arch):
    model = make_tiny_model(arch)
    ids = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    ours = generate(model, ids, max_new_tokens=12, eos_token_id=[]).sequences
    assert torch.equal(ours, _hf_greedy(model, ids))


@pytest.mark.parametrize("arch", GEN_ARCHS)
def test_final_layer_greedy_matches_model_generate_batched(arch):
    model = make_tiny_model(arch)
    ids, mask, _ = _left_padded()
    ours = generate(model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[]).sequences
    assert torch.equal(ours, _hf_greedy(model, ids, mask))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_equals_each_prompt_alone(arch):
    model = make_tiny_model(arch)
    ids, mask, prompts = _left_padded()
    batched = generate(model, ids, attention_mask=mask, max_new_tokens=10, eos_token_id=[]).new_tokens
    for row, prompt in enumerate(prompts):
        alone = generate(model, prompt[None], max_new_tokens=10, eos_token_id=[]).new_tokens
        assert torch.equal(batched[row], alone[0])


@pytest.mark.parametrize("strategy", [FinalLayer(), SingleLayer(layer=2)])
def test_cached_equals_uncached(strategy):
    model = make_tiny_model("llama")
    ids, mask, _ = _left_padded()
    cached = generate(model, ids, attention_mask=mask, strategy=strategy, max_new_tokens=8, eos_token_id=[])
    uncached = generate(
        model, ids, attention_mask=mask, strategy=strategy, max_new_tokens=8, eos_token_id=[], use_cache=False
    )
    assert torch.equal(cached.sequences, uncached.sequences)


def test_single_layer_at_final_layer_equals_final_layer():
    model = make_tiny_model("qwen2")
    ids, mask, _ = _left_padded()
    a = generate(model, ids, attention_mask=mask, strategy=SingleLayer(layer=LAYERS), max_new_tokens=8)
    b = generate(model, ids, attention_mask=mask, strategy=FinalLayer(), max_new_tokens=8)
    assert torch.equal(a.sequences, b.sequences)


def test_single_layer_decodes_from_that_layer_and_runs_fewer_blocks():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(5))
    out = generate(model, ids, strategy=SingleLayer(layer=2), max_new_tokens=1)
    want = apply_lens(model, ids, layers=[2], positions=[-1]).logits[0, 0, 0].argmax()
    assert out.new_tokens[0, 0] == want
    assert out.trace.layers == (2,) and out.trace.blocks_per_step == 2


def test_seeded_sampling_is_reproducible_and_matches_transformers():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(1))
    kw = dict(max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9, eos_token_id=[])
    a = generate(model, ids, seed=123, **kw).sequences
    b = generate(model, ids, seed=123, **kw).sequences
    c = generate(model, ids, seed=124, **kw).sequences
    assert torch.equal(a, b) and not torch.equal(a, c)
    # With torch's global RNG, the same seed gives transformers' own sampled tokens.
    torch.manual_seed(7)
    ours = generate(model, ids, **kw).sequences
    torch.manual_seed(7)
    with torch.no_grad():
        theirs = model.generate(
            ids, **{k: v for k, v in kw.items() if k != "eos_token_id"}, eos_token_id=None
        )
    assert torch.equal(ours, theirs)


def test_repetition_penalty_matches_transformers():
    model = make_tiny_model("gpt2")
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    ours = generate(model, ids, max_new_tokens=10, repetition_penalty=1.3, eos_token_id=[]).sequences
    with torch.no_grad():
        theirs = model.generate(
            ids, max_new_tokens=10, do_sample=False, repetition_penalty=1.3, eos_token_id=None
        )
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_custom_generate_equals_lenssample_generate(arch):
    model = make_tiny_model(arch)
    ids, mask, _ = _left_padded()
    for strategy in [FinalLayer(), SingleLayer(layer=3)]:
        ours = generate(model, ids, attention_mask=mask, strategy=strategy, max_new_tokens=9, eos_token_id=[])
        with torch.no_grad():
            hf = model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=9,
                custom_generate=decoder(strategy),
                eos_token_id=None,
            )
        assert torch.equal(hf, ours.sequences)


def test_custom_generate_honours_eos_and_processors():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))
    free = generate(model, ids, max_new_tokens=6, eos_token_id=[]).new_tokens[0]
    k = next(
        i for i in range(6) if int(free[i]) not in free[:i].tolist()[:i] and (i == 0 or free[i] != free[0])
    )
    eos = int(free[k])
    with torch.no_grad():
        hf = model.generate(
            ids, max_new_tokens=6, custom_generate=decoder(), eos_token_id=eos, pad_token_id=0
        )
    ours = generate(model, ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0).sequences
    assert torch.equal(hf, ours)
    assert ours.shape[1] == 5 + k + 1  # stopped right after the EOS token
    with torch.no_grad():
        hf_rp = model.generate(ids, max_new_tokens=6, custom_generate=decoder(), repetition_penalty=1.5)
        plain_rp = model.generate(ids, max_new_tokens=6, do_sample=False, repetition_penalty=1.5)
    assert torch.equal(hf_rp, plain_rp)


def test_eos_several_ids_and_padding_of_finished_rows():
    model = make_tiny_model("llama")
    ids, mask, _ = _left_padded()
    free = generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=[]).new_tokens
    eos = [int(free[0, 1]), 95 if int(free[1, 3]) != 95 else 94]
    out = generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    new = out.new_tokens
    assert new[0, 1] == eos[0] and (new[0, 2:] == 0).all()
    with torch.no_grad():
        theirs = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=eos,
                                pad_token_id=0)  # fmt: skip
    assert torch.equal(out.sequences, theirs)


def test_stopping_criteria_and_streamer():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (1, 5), generator=torch.Generator().manual_seed(4))

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 8, dtype=torch.bool)

    class Recorder:
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.tolist())

        def end(self):
            self.ended = True

    rec = Recorder()
    out = generate(model, ids, max_new_tokens=10, eos_token_id=[], stopping_criteria=StoppingCriteriaList([StopAfter()]),
                   streamer=rec)  # fmt: skip
    assert out.sequences.shape[1] == 8
    assert (
        rec.ended
        and rec.chunks[0] == ids.tolist()
        and [c[0] for c in rec.chunks[1:]] == out.new_tokens[0].tolist()
    )


def test_trace_records_strategy_info():
    from dataclasses import dataclass
    from typing import ClassVar

    from lenssample.strategies.base import Strategy, StrategyOutput

    @dataclass(frozen=True, kw_only=True)
    class ArgmaxLayer(Strategy):
        name: ClassVar[str] = "test-argmax-layer"

        def layers(self, num_layers):
            return (1, num_layers)

        def __call__(self, lens_logits, layers):
            best = lens_logits.max(-1).values.argmax(-1)
            return StrategyOutput(logits=lens_logits[:, -1], info={"chosen": torch.tensor(layers)[best]})

    model = make_tiny_model("llama")
    ids, mask, _ = _left_padded()
    out = generate(model, ids, attention_mask=mask, strategy=ArgmaxLayer(), max_new_tokens=5, eos_token_id=[])
    assert out.trace.info["chosen"].shape == (2, 5)
    assert set(out.trace.info["chosen"].unique().tolist()) <= {1, LAYERS}
    assert out.trace.to_dict()["layers"] == [1, LAYERS]


def test_public_api_is_exported():
    for name in [
        "generate",
        "load_model",
        "apply_lens",
        "score",
        "FinalLayer",
        "LogitLens",
        "strategy_from_name",
    ]:
        assert hasattr(lenssample, name)
