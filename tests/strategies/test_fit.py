"""Fitted ensemble weights: on the simplex, optimal on the fitting text (never worse than the final layer or the
uniform mixture there), and the returned strategy scores exactly the fitted NLL."""

from __future__ import annotations

import numpy as np
import torch

from lenssample import FinalLayer, LayerEnsemble, score
from lenssample.data.windows import token_windows
from lenssample.strategies.fit import fit_layer_weights, fit_mixture_weights, layer_token_log_probs
from tests.conftest import LAYERS, VOCAB, make_tiny_model


class _Tokenizer:
    """Maps characters to ids 3..VOCAB-1 (enough for a fit on a tiny model)."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [3 + (ord(c) % (VOCAB - 3)) for c in text]}


def test_mixture_fit_recovers_a_planted_mixture():
    rng = np.random.default_rng(0)
    # Two "layers": the data come from layer 1 with probability 0.8.
    q = np.array([[0.9, 0.1], [0.2, 0.8]])  # q[layer, outcome]
    outcomes = rng.choice(2, size=4000, p=0.2 * q[0] + 0.8 * q[1])
    table = np.log(q[:, outcomes].T)  # [N, 2]
    weights, nll = fit_mixture_weights(table)
    assert abs(weights[1] - 0.8) < 0.06 and abs(weights.sum() - 1) < 1e-9 and (weights >= 0).all()
    for other in ([0.5, 0.5], [0.0, 1.0], [1.0, 0.0]):
        assert nll <= -np.log(np.exp(table) @ np.array(other)).mean() + 1e-9


def test_fit_on_tiny_model_is_optimal_on_its_text_and_scores_consistently():
    model = make_tiny_model("llama", seed=3)
    texts = [
        "the quick brown fox jumps over the lazy dog " * 6,
        "pack my box with five dozen liquor jugs " * 6,
    ]
    result = fit_layer_weights(model, _Tokenizer(), texts, max_tokens=120, window=40)
    assert result.layers == tuple(range(LAYERS + 1))
    assert abs(sum(result.weights) - 1) < 1e-9 and min(result.weights) >= 0
    assert result.nll <= result.final_nll + 1e-9
    windows = token_windows(texts, _Tokenizer(), seq_len=40, max_positions=120)  # the windows the fit used
    assert result.tokens == sum(len(w) - 1 for w in windows) and 120 - 8 < result.tokens <= 120
    table = torch.cat([layer_token_log_probs(model, w[None], result.layers) for w in windows])
    uniform_nll = -torch.logsumexp(table - np.log(table.shape[1]), dim=1).mean()
    assert result.nll <= float(uniform_nll) + 1e-6
    # The returned strategy scores the same windows with the fitted NLL; the final layer with final_nll.
    fitted = torch.cat([score(model, w[None], result.strategy).token_log_probs.flatten() for w in windows])
    torch.testing.assert_close(
        -fitted.mean(), torch.tensor(result.nll, dtype=torch.float32), atol=1e-4, rtol=0
    )
    final = torch.cat([score(model, w[None], FinalLayer()).token_log_probs.flatten() for w in windows])
    torch.testing.assert_close(
        -final.mean(), torch.tensor(result.final_nll, dtype=torch.float32), atol=1e-4, rtol=0
    )
    assert isinstance(result.strategy, LayerEnsemble) and result.strategy.combine == "mixture"
