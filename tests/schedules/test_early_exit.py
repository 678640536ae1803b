"""Early exit: degenerate settings equal FinalLayer exactly, blocks really skipped, model intact after errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import lenssample
from lenssample.api import decoder
from lenssample.cli import main
from lenssample.model.adapters import model_parts
from lenssample.schedules import Agreement, EarlyExit, Entropy, Margin, MaxProb, Saturation
from lenssample.schedules.speculative import LayerDraft, SelfSpeculative
from tests.conftest import LAYERS, make_tiny_model

ARCHS = ["llama", "gpt2", "qwen2", "phi3"]
MEASURES = [MaxProb(threshold=0.3), Margin(threshold=0.2), Entropy(threshold=2.5), Saturation(threshold=0.5),
            Agreement(count=2)]  # fmt: skip


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 90, (1, 6), generator=torch.Generator().manual_seed(seed))


def _gen(model, ids, **kw):
    return lenssample.generate(model, ids, max_new_tokens=12, eos_token_id=[], **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_never_confident_and_exit_at_L_equal_final_layer(arch):
    model = make_tiny_model(arch)
    for seed in (0, 1):
        ids = _ids(seed)
        reference = _gen(model, ids)
        never = _gen(model, ids, schedule=EarlyExit(measure=MaxProb(threshold=1.0)))
        at_l = _gen(model, ids, schedule=EarlyExit(measure=MaxProb(threshold=0.0), min_layer=LAYERS))
        assert torch.equal(never.sequences, reference.sequences)
        assert torch.equal(at_l.sequences, reference.sequences)
        assert (never.trace.info["exit_layer"] == LAYERS).all() and never.trace.blocks_per_step == LAYERS


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_always_confident_exits_at_min_layer_and_matches_single_layer_first_token(arch):
    model = make_tiny_model(arch)
    ids = _ids(0)
    for min_layer in range(1, LAYERS):
        out = _gen(
            model,
            ids,
            schedule=EarlyExit(measure=MaxProb(threshold=0.0), min_layer=min_layer, max_pending=64),
        )
        exits = out.trace.info["exit_layer"][0]
        assert exits[0] == LAYERS  # the prompt pass runs to the end
        assert (exits[1:] == min_layer).all()
        assert out.trace.blocks_per_step < LAYERS
        # The second token is the lens at min_layer after the true first token: compare with SingleLayer.
        single = lenssample.generate(
            model,
            out.sequences[:, : ids.shape[1] + 1],
            max_new_tokens=1,
            strategy=lenssample.SingleLayer(layer=min_layer),
        )
        assert single.new_tokens[0, 0] == out.new_tokens[0, 1]


class _CountBlocks:
    def __init__(self, model):
        self.calls = 0
        self.handles = [b.register_forward_hook(self._hook) for b in model_parts(model).blocks]

    def _hook(self, *_):
        self.calls += 1


def test_skipped_blocks_really_do_not_run():
    model = make_tiny_model("llama")
    counter = _CountBlocks(model)
    out = _gen(
        model, _ids(0), schedule=EarlyExit(measure=MaxProb(threshold=0.0), min_layer=1, max_pending=64)
    )
    assert counter.calls == LAYERS + 11 * 1  # prompt pass, then one block per token
    assert out.trace.blocks_per_step == pytest.approx((LAYERS + 11) / 12)


def test_forced_full_depth_when_too_many_pending():
    model = make_tiny_model("llama")
    out = _gen(model, _ids(0), schedule=EarlyExit(measure=MaxProb(threshold=0.0), min_layer=1, max_pending=3))
    exits = out.trace.info["exit_layer"][0].tolist()
    assert LAYERS in exits[1:] and (out.trace.info["pending"] <= 4).all()


@pytest.mark.parametrize("measure", MEASURES, ids=lambda m: type(m).__name__)
def test_measures_run_and_exit_between_min_layer_and_L(measure):
    model = make_tiny_model("qwen2")
    out = _gen(model, _ids(1), schedule=EarlyExit(measure=measure, min_layer=2))
    exits = out.trace.info["exit_layer"]
    assert ((exits >= 2) & (exits <= LAYERS)).all()
    assert out.new_tokens.shape == (1, 12)


@pytest.mark.parametrize("skipped_kv", ["recompute", "propagate"])
def test_batched_rows_equal_single_rows(skipped_kv):
    model = make_tiny_model("llama")
    schedule = EarlyExit(measure=Entropy(threshold=4.0), min_layer=2, skipped_kv=skipped_kv)
    a, b = _ids(0), _ids(1)[:, :4]
    batch = lenssample.generate(
        model, torch.cat([a, torch.cat([torch.zeros(1, 2, dtype=torch.long), b], 1)]),
        attention_mask=torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]]), max_new_tokens=8, eos_token_id=[], schedule=schedule,
    )  # fmt: skip
    for row, ids in enumerate((a, b)):
        single = lenssample.generate(model, ids, max_new_tokens=8, eos_token_id=[], schedule=schedule)
        assert torch.equal(batch.new_tokens[row], single.new_tokens[0])
        assert torch.equal(batch.trace.info["exit_layer"][row], single.trace.info["exit_layer"][0])
    exits = batch.trace.info["exit_layer"][:, 1:]
    assert bool((exits < LAYERS).any()) and bool((exits > 2).any())  # a mixture of exit depths


class _Boom(LogitsProcessor):
    def __init__(self):
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return scores


def test_model_intact_after_exception_mid_step():
    model = make_tiny_model("llama")
    blocks = list(model_parts(model).blocks)
    ids = _ids(0)
    reference = _gen(model, ids)
    with pytest.raises(RuntimeError, match="boom"):
        _gen(model, ids, logits_processor=LogitsProcessorList([_Boom()]),
             schedule=EarlyExit(measure=MaxProb(threshold=0.0), min_layer=2))  # fmt: skip
    parts = model_parts(model)
    assert list(parts.blocks) == blocks
    assert all(not b._forward_hooks for b in parts.blocks)
    assert torch.equal(_gen(model, ids).sequences, reference.sequences)


def test_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        MaxProb(threshold=1.5)
    with pytest.raises(ValueError, match="count"):
        Agreement(count=1)
    with pytest.raises(TypeError, match="measure must be"):
        EarlyExit(measure=0.9)
    with pytest.raises(ValueError, match="min_layer"):
        _gen(make_tiny_model("llama"), _ids(0), schedule=EarlyExit(measure=MaxProb(), min_layer=LAYERS + 1))


@pytest.mark.parametrize(
    "schedule",
    [EarlyExit(measure=Margin(threshold=0.1), min_layer=2), SelfSpeculative(draft=LayerDraft(layer=2), k=3)],
    ids=["early-exit", "speculative"],
)
def test_custom_generate_path_equals_generate(schedule):
    model = make_tiny_model("llama")
    ids = _ids(0)
    ours = lenssample.generate(model, ids, max_new_tokens=10, schedule=schedule)
    theirs = model.generate(
        ids, max_new_tokens=10, do_sample=False, custom_generate=decoder(schedule=schedule)
    )
    assert torch.equal(theirs, ours.sequences)


def test_cli_schedule_errors_exit_2(capsys):
    assert main(["generate", "hi", "--schedule", "speculativ"]) == 2
    assert "Did you mean 'speculative'" in capsys.readouterr().err
    assert main(["generate", "hi", "--schedule", "speculative", "--schedule-set", "k=3"]) == 2
    assert "draft_layer" in capsys.readouterr().err
    assert main(["generate", "hi", "--schedule", "early-exit", "--schedule-set", "treshold=0.3"]) == 2
    assert "Did you mean 'threshold'" in capsys.readouterr().err
    assert main(["generate", "hi", "--schedule-set", "k=3"]) == 2


@pytest.mark.real
def test_cli_real_model_schedules(capsys, real_model):
    assert main(["generate", "The capital of France is", "--max-new-tokens", "5", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    argv = ["generate", "The capital of France is", "--max-new-tokens", "5", "--json", "--schedule", "speculative",
            "--schedule-set", "draft_layer=24", "--schedule-set", "k=3"]  # fmt: skip
    assert main(argv) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["tokens"] == plain["tokens"] and "acceptance_rate" in spec["trace"]
    argv = ["generate", "The capital of France is", "--max-new-tokens", "5", "--json", "--schedule", "early-exit",
            "--schedule-set", "measure=max-prob", "--schedule-set", "threshold=0.9", "--schedule-set", "min_layer=20"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["trace"]["info"]["exit_layer"][0]) == 5
