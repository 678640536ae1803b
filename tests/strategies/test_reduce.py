"""Degenerate settings of the mixing/contrast strategies reduce to the final layer, exactly; every strategy scores
and generates on tiny models, and a batch gives the same tokens as each prompt alone."""

from __future__ import annotations

import pytest
import torch

from lenssample import (
    SLED,
    AutoContrastive,
    DoLa,
    DoLaStatic,
    FinalLayer,
    LayerContrast,
    LayerEnsemble,
    LayerWindow,
    generate,
    score,
)
from tests.conftest import LAYERS, VOCAB, make_tiny_model
from tests.strategy_cases import ALL, BATCH_DEPENDENT, PER_ROW


def _ids(seed=0, batch=2, length=10):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _greedy(model, strategy, ids, n=10, **kwargs):
    return generate(model, ids, strategy=strategy, max_new_tokens=n, eos_token_id=[], **kwargs).new_tokens


# Settings whose whole distribution equals the final layer's.
SAME_DISTRIBUTION = {
    "one-hot mixture on L": LayerEnsemble(weights=[0, 0, 0, 0, 1]),
    "one-hot product on L": LayerEnsemble(weights=[0, 0, 0, 0, 1], combine="product"),
    "ensemble of L alone": LayerEnsemble(layers=[-1], weights="entropy"),
    "window gamma=0": LayerWindow(window=3, gamma=0.0),
    "contrast beta=0 no cut-off": LayerContrast(amateur_layer=1, beta=0.0, alpha=None),
    "acd alpha=1": AutoContrastive(amateur_layer=1, alpha=1.0),
    "sled rate=0 all tokens": SLED(evolution_rate=0.0, evolution_scale=VOCAB),
}
# Settings that keep the final layer's top token only (or its ranking): same greedy tokens.
SAME_GREEDY = {
    "dola alpha=1": DoLa(layers="high", alpha=1.0),
    "dola-static alpha=1": DoLaStatic(premature_layer=2, alpha=1.0),
    "contrast beta=0": LayerContrast(amateur_layer=2, beta=0.0),
    "contrast alpha=1": LayerContrast(amateur_layer=2, beta=3.0, alpha=1.0),
    "sled rate=0": SLED(evolution_rate=0.0),
}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("case", sorted(SAME_DISTRIBUTION))
def test_degenerate_settings_give_the_final_distribution(arch, case):
    model = make_tiny_model(arch)
    ids = _ids()
    want = score(model, ids, FinalLayer(), return_log_probs=True).log_probs
    got = score(model, ids, SAME_DISTRIBUTION[case], return_log_probs=True).log_probs
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    assert torch.equal(_greedy(model, SAME_DISTRIBUTION[case], ids), _greedy(model, FinalLayer(), ids))


@pytest.mark.parametrize("case", sorted(SAME_GREEDY))
def test_degenerate_settings_give_the_final_greedy_tokens(case):
    model = make_tiny_model("llama")
    ids = _ids(seed=1)
    assert torch.equal(_greedy(model, SAME_GREEDY[case], ids), _greedy(model, FinalLayer(), ids))
    got = score(model, ids, SAME_GREEDY[case], return_log_probs=True).log_probs
    want = score(model, ids, FinalLayer(), return_log_probs=True).log_probs
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_alpha_one_keeps_only_the_top_token():
    model = make_tiny_model("llama")
    out = score(model, _ids(), DoLa(layers=[1, 2], alpha=1.0), return_log_probs=True)
    final = score(model, _ids(), FinalLayer(), return_log_probs=True)
    allowed = torch.isfinite(out.log_probs)
    assert (allowed.sum(-1) == 1).all()
    assert torch.equal(allowed.float().argmax(-1), final.log_probs.argmax(-1))


@pytest.mark.parametrize("case", sorted(PER_ROW))
def test_batch_equals_each_prompt_alone(case):
    model = make_tiny_model("llama", seed=1)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g) for n in (4, 9, 6)]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, 9 - len(prompt) :], mask[row, 9 - len(prompt) :] = prompt, 1
    strategy = PER_ROW[case]
    batched = generate(model, ids, attention_mask=mask, strategy=strategy, max_new_tokens=8, eos_token_id=[])
    for row, prompt in enumerate(prompts):
        alone = generate(model, prompt[None], strategy=strategy, max_new_tokens=8, eos_token_id=[])
        assert torch.equal(batched.new_tokens[row], alone.new_tokens[0]), (case, row)
        for key, value in alone.trace.info.items():
            assert torch.equal(batched.trace.info[key][row], value[0]), (case, key, row)


def test_reference_mode_picks_one_layer_for_the_whole_batch():
    model = make_tiny_model("llama", seed=1)
    (strategy,) = BATCH_DEPENDENT.values()
    out = generate(model, _ids(batch=3, length=6), strategy=strategy, max_new_tokens=6, eos_token_id=[])
    chosen = out.trace.info["premature_layer"]  # [batch, steps]
    assert (chosen == chosen[:1]).all()


@pytest.mark.parametrize("case", sorted(ALL))
def test_scoring_every_strategy(case):
    model = make_tiny_model("qwen2")
    strategy = ALL[case]
    ids = _ids(seed=2, length=7)
    out = score(model, ids, strategy, return_log_probs=True)
    assert out.token_log_probs.shape == (2, 6)
    assert not torch.isnan(out.log_probs).any() and (out.log_probs <= 1e-5).all()
    torch.testing.assert_close(out.log_probs.exp().sum(-1), torch.ones(2, 6), atol=1e-4, rtol=0)
    # Chunking positions changes nothing for per-row strategies.
    if case in PER_ROW:
        chunked = score(model, ids, strategy, max_chunk_bytes=1)
        torch.testing.assert_close(chunked.token_log_probs, out.token_log_probs)
    for key, value in out.info.items():
        assert value.shape == (2, 6), key
    assert set(strategy.layers(LAYERS)) <= set(range(LAYERS + 1))


def test_dola_premature_layer_is_the_candidate_of_largest_jsd():
    """Per row, the chosen layer maximises JSD(q_L || q_j) computed directly from the lens distributions."""
    from lenssample import apply_lens

    model = make_tiny_model("llama", seed=2)
    ids = _ids(seed=3, batch=2, length=8)
    strategy = DoLa(layers=[0, 1, 2, 3])
    out = score(model, ids, strategy)
    log_probs = apply_lens(model, ids, layers=[0, 1, 2, 3, 4]).log_probs()[:, :-1].double()  # [b, pos, 5, V]
    p, m_ = log_probs.exp(), None
    mature = p[..., -1:, :]
    mixture = 0.5 * (mature + p[..., :-1, :])
    jsd = 0.5 * (mature * (mature.log() - mixture.log())).sum(-1) + 0.5 * (
        p[..., :-1, :] * (p[..., :-1, :].log() - mixture.log())
    ).sum(-1)
    del m_
    assert torch.equal(out.info["premature_layer"], jsd.argmax(-1))


def test_dola_excluded_logit_gives_finite_scores():
    model = make_tiny_model("llama")
    ids = _ids()
    hard = score(model, ids, DoLa(layers=[1, 2]))
    soft = score(model, ids, DoLa(layers=[1, 2], excluded_logit=-1000.0))
    assert torch.isinf(hard.token_log_probs).any()  # random tokens often fall outside the plausibility set
    assert torch.isfinite(soft.token_log_probs).all()
    inside = torch.isfinite(hard.token_log_probs)
    torch.testing.assert_close(soft.token_log_probs[inside], hard.token_log_probs[inside])
