"""Reading a text in windows (``window=``/``stride=`` of score, trajectory, layer_statistics): every position is
computed once, from exactly the tokens of its window; memory does not depend on the text's length."""

from __future__ import annotations

import pytest
import torch

from lenssample import score
from lenssample.analysis import layer_statistics, trajectory
from lenssample.lens.passes import check_window, window_spans
from tests.conftest import VOCAB, make_tiny_model


def _ids(batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("length", "window", "stride"), [(1, 4, 2), (10, 4, 2), (17, 5, 5), (9, 9, 1), (30, 8, 3)])
def test_window_spans_keep_every_position_once_with_its_least_context(length, window, stride):
    spans = window_spans(length, window, stride)
    kept = [p for _, owned, end in spans for p in range(owned, end)]
    assert kept == list(range(length))
    for start, owned, end in spans:
        assert end - start <= window
        assert start == 0 or owned - start >= window - stride  # the least context of a kept position


def test_a_window_as_long_as_the_text_is_the_exact_pass():
    model = make_tiny_model("llama")
    ids = _ids(2, 12)
    exact = score(model, ids, "dola:layers=[1,2]", return_log_probs=True)
    windowed = score(model, ids, "dola:layers=[1,2]", return_log_probs=True, window=12)
    torch.testing.assert_close(windowed.token_log_probs, exact.token_log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(windowed.log_probs, exact.log_probs, rtol=1e-5, atol=1e-5)
    assert torch.equal(windowed.info["premature_layer"], exact.info["premature_layer"])


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
def test_each_position_is_scored_from_the_tokens_of_its_window(model_type):
    """window 8, stride 3: the first window scores positions 0..7 (targets 1..8); the next one reads tokens 3..10
    and scores positions 8..10, exactly as scoring tokens 3..11 alone scores them."""
    model = make_tiny_model(model_type)
    ids = _ids(1, 24, seed=1)
    windowed = score(model, ids, "ensemble", window=8, stride=3).token_log_probs[0]
    exact = score(model, ids, "ensemble").token_log_probs[0]
    torch.testing.assert_close(windowed[:8], exact[:8], rtol=1e-5, atol=1e-5)
    alone = score(model, ids[:, 3:12], "ensemble").token_log_probs[0]  # positions 3..10 of the text
    torch.testing.assert_close(windowed[8:11], alone[5:8], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(windowed[8:], exact[8:])  # later positions lost context: the test can tell


def test_a_leading_bos_token_is_put_in_front_of_every_window():
    model = make_tiny_model("llama")
    bos = model.config.bos_token_id
    ids = torch.cat([torch.tensor([[bos]]), _ids(1, 20, seed=2)], dim=1)
    windowed = score(model, ids, window=6, stride=2).token_log_probs[0]
    # the second window keeps positions 6, 7 and reads BOS + tokens 3..7 (five tokens after the BOS)
    alone = score(model, torch.cat([ids[:, :1], ids[:, 3:9]], dim=1)).token_log_probs[0]
    torch.testing.assert_close(windowed[6:8], alone[4:6], rtol=1e-5, atol=1e-5)


def test_padded_rows_read_in_windows_score_as_alone():
    model = make_tiny_model("qwen2")
    ids = _ids(2, 15, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding
    mask[1, -3:] = 0  # right padding
    out = score(model, ids, "sled", attention_mask=mask, window=6, stride=2)
    for row, real in ((0, slice(4, None)), (1, slice(None, -3))):
        alone = score(model, ids[row : row + 1, real], "sled", window=6, stride=2)
        torch.testing.assert_close(out.token_log_probs[row][out.target_mask[row]], alone.token_log_probs[0])
    assert bool((out.token_log_probs[~out.target_mask] == 0).all())


def test_windows_read_texts_longer_than_the_model_positions():
    model = make_tiny_model("llama")
    limit = model.config.max_position_embeddings
    ids = _ids(1, limit + 40, seed=4)
    with pytest.raises(ValueError, match="read it in windows of at most"):
        score(model, ids)
    out = score(model, ids, window=limit // 2)
    assert out.token_log_probs.shape == (1, limit + 39) and bool(torch.isfinite(out.token_log_probs).all())
    with pytest.raises(ValueError, match=f"window={limit + 1} is more than this model's {limit} positions"):
        score(model, ids, window=limit + 1)


def test_trajectory_and_layer_statistics_in_windows():
    model = make_tiny_model("llama")
    ids = _ids(1, 30, seed=5)[0]
    positions = [25, 2, 12]
    windowed = trajectory(model, None, ids, positions=positions, window=10, stride=4)
    exact = trajectory(model, None, ids, positions=positions)
    assert windowed.positions == exact.positions == tuple(positions)
    # position 2 lies in the first window (exact); 12 and 25 lost context
    assert abs(windowed.kl[:, 1] - exact.kl[:, 1]).max() < 1e-5
    assert abs(windowed.kl[:, [0, 2]] - exact.kl[:, [0, 2]]).max() > 1e-4
    # the pass reads positions 0..25 (none after the last asked for); 25 is kept by the window reading 16..25
    alone = trajectory(model, None, ids[16:26], positions=[-1])
    assert abs(windowed.kl[:, 0] - alone.kl[:, 0]).max() < 1e-5
    stats = layer_statistics(model, ids, window=10, stride=4)
    exact_stats = layer_statistics(model, ids)
    assert stats.values["kl"].shape == exact_stats.values["kl"].shape
    assert abs(stats.values["kl"][:10] - exact_stats.values["kl"][:10]).max() < 1e-5


@pytest.mark.parametrize(
    ("window", "stride", "message"),
    [
        (1, None, "window=1 must be an integer >= 2"),
        (2.5, None, "window=2.5 must be an integer"),
        (8, 9, "stride=9 must be an integer in 1..8"),
        (8, 0, "stride=0 must be an integer in 1..8"),
        (None, 3, "stride=3 without window="),
    ],
)
def test_bad_windows_are_refused_by_name(window, stride, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_window(window, stride)
    with pytest.raises((ValueError, TypeError), match=message):
        score(make_tiny_model("llama"), _ids(1, 6), window=window, stride=stride)
