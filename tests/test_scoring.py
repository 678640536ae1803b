"""Teacher-forced scoring: FinalLayer scores are the model's own log-probs; chunking changes nothing."""

from __future__ import annotations

import pytest
import torch

import lenssample as ls
from lenssample import FinalLayer, SingleLayer, apply_lens, score
from tests.conftest import VOCAB, make_tiny_model


def test_final_layer_score_equals_model_log_probs():
    model = make_tiny_model("llama")
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    out = score(model, ids, FinalLayer(), return_log_probs=True)
    with torch.no_grad():
        want = torch.log_softmax(model(ids).logits[:, :-1], dim=-1)
    torch.testing.assert_close(out.log_probs, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        out.token_log_probs, want.gather(-1, ids[:, 1:, None]).squeeze(-1), rtol=1e-5, atol=1e-5
    )
    # exp of the mean NLL is the model's own perplexity
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    torch.testing.assert_close(-out.token_log_probs.mean(), loss, rtol=1e-5, atol=1e-5)


def test_chunking_does_not_change_scores():
    model = make_tiny_model("gpt2")
    ids = torch.randint(3, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    one = score(model, ids, SingleLayer(layer=2))
    tiny_chunks = score(model, ids, SingleLayer(layer=2), max_chunk_bytes=1)
    torch.testing.assert_close(one.token_log_probs, tiny_chunks.token_log_probs)
    lens = apply_lens(model, ids, layers=[2]).log_probs()[:, :-1, 0]
    torch.testing.assert_close(
        one.token_log_probs, lens.gather(-1, ids[:, 1:, None]).squeeze(-1), rtol=1e-5, atol=1e-5
    )


def test_right_padding_scores_like_no_padding():
    model = make_tiny_model("gpt2")
    ids = torch.randint(3, VOCAB, (1, 6), generator=torch.Generator().manual_seed(2))
    padded, mask = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1), torch.tensor([[1] * 6 + [0] * 3])
    out = score(model, padded, FinalLayer(), attention_mask=mask)
    assert out.target_mask.sum() == 5
    torch.testing.assert_close(
        out.token_log_probs[out.target_mask], score(model, ids, FinalLayer()).token_log_probs[0]
    )


def test_several_strategies_scored_together_equal_each_scored_alone():
    """targets_by_strategy shares the forward pass and the projection (the union of the layers, both final-norm
    settings) and gives every strategy its own target_scores result, decisions included."""
    from lenssample.scoring import target_scores, targets_by_strategy
    from lenssample.strategies.base import as_strategy

    model = make_tiny_model("llama")
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (2, 10), generator=gen)
    targets, select = ids.roll(-1, 1), torch.rand(2, 10, generator=gen) > 0.3
    select[:, -1] = False
    specs = ["final", "layer:layer=2", "dola:layers=[1,2]", "dola-reference:layers=low", "ensemble:weights=entropy",
             "contrast", "sled"]  # fmt: skip
    together = targets_by_strategy(model, ids, targets, select, specs, excluded_value=-1000.0, max_chunk_bytes=4096)
    for spec, shared in zip(specs, together):
        alone = target_scores(model, ids, targets, select, as_strategy(spec), excluded_value=-1000.0)
        torch.testing.assert_close(shared.values, alone.values, rtol=1e-5, atol=1e-5, msg=spec)
        assert torch.equal(shared.excluded, alone.excluded) and torch.equal(shared.greedy, alone.greedy), spec
        assert shared.info.keys() == alone.info.keys(), spec
        for key in alone.info:
            torch.testing.assert_close(shared.info[key], alone.info[key], msg=f"{spec} {key}")


def test_strategies_in_parts_of_a_row_score_as_whole_chunks(monkeypatch):
    """Scoring hands each strategy a chunk a few rows at a time (lens.passes.row_parts, PART_BYTES of lens logits);
    parts of one row each give the same scores, greedy flags and decisions as parts as large as the chunk."""
    from lenssample.lens import passes
    from lenssample.scoring import targets_by_strategy

    model = make_tiny_model("llama")
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(3, VOCAB, (2, 9), generator=gen)
    targets, select = ids.roll(-1, 1), torch.rand(2, 9, generator=gen) > 0.2
    select[:, -1] = False
    specs = ["final", "dola:layers=[1,2]", "ensemble:weights=entropy", "sled"]
    whole = targets_by_strategy(model, ids, targets, select, specs)
    monkeypatch.setattr(passes, "PART_BYTES", 1)  # one row per part
    assert len(list(passes.row_parts(5, 4 * VOCAB))) == 5
    # chunks of 3 rows (the ensemble reads all L + 1 layers; 4 copies for shared strategies): parts inside chunks
    # that do not start at row 0
    chunk_bytes = 3 * (model.config.num_hidden_layers + 1) * VOCAB * 4 * 4
    rows = targets_by_strategy(model, ids, targets, select, specs, max_chunk_bytes=chunk_bytes)
    for spec, a, b in zip(specs, whole, rows):
        torch.testing.assert_close(a.values, b.values, msg=spec)
        assert torch.equal(a.excluded, b.excluded) and torch.equal(a.greedy, b.greedy), spec
        for key in a.info:
            torch.testing.assert_close(a.info[key], b.info[key], msg=f"{spec} {key}")


@pytest.mark.parametrize("spec", ["final", "dola:layers=[0,2]", "sled", "ensemble"])
def test_left_padding_scores_like_no_padding(spec):
    """A left-padded row's first token has no context (it is predicted from padding): it is not a target, and the
    row's scores are those of the row alone."""
    model = make_tiny_model("llama")
    padded = ls.score(model, torch.tensor([[0, 0, 5, 6, 7, 8]]), spec, attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]))
    alone = ls.score(model, torch.tensor([[5, 6, 7, 8]]), spec)
    assert padded.target_mask.tolist() == [[False, False, True, True, True]]
    torch.testing.assert_close(padded.token_log_probs[padded.target_mask], alone.token_log_probs[0], atol=1e-4,
                               rtol=0)
