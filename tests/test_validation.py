"""Tokenizer/model pairing (:func:`lenssample.validation.check_tokenizer`), at every entry point that takes both."""

from __future__ import annotations

import os

import pytest

from lenssample import generate, load_model, trajectory
from lenssample.eval.multiple_choice import score_continuations
from lenssample.eval.perplexity import perplexity
from lenssample.lens.train import train_tuned_lens
from lenssample.strategies import FinalLayer
from lenssample.strategies.fit import fit_layer_weights
from lenssample.validation import check_threads, tokenizer_fingerprint
from tests.conftest import make_tiny_model, make_tiny_tokenizer

TEXT = "t5 t6 t7 t8 t9 t10 t11 t12 t13 t14"
ENTRY_POINTS = {
    "generate": lambda model, tok: generate(model, TEXT, tokenizer=tok, max_new_tokens=2),
    "trajectory": lambda model, tok: trajectory(model, tok, TEXT),
    "perplexity": lambda model, tok: perplexity(model, [list(range(3, 40))], FinalLayer(), window=16, tokenizer=tok),
    "multiple choice": lambda model, tok: score_continuations(model, tok, TEXT, [" t3", " t4"], FinalLayer()),
    "train-lens": lambda model, tok: train_tuned_lens(model, [TEXT * 4] * 4, tokenizer=tok, steps=1, progress=False),
    "fit": lambda model, tok: fit_layer_weights(model, tok, [TEXT * 4], max_tokens=20, window=16),
}  # fmt: skip


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_another_models_tokenizer_is_refused(fake_gguf, entry):
    model, tokenizer = load_model(fake_gguf)
    assert model.lenssample_tokenizer == tokenizer_fingerprint(tokenizer)
    assert model.lenssample_name == str(fake_gguf)  # names its cached tuned lens (lens="tuned")
    other = make_tiny_tokenizer(prefix="w")  # as many tokens, other words: another model's
    with pytest.raises(ValueError, match="tokenizer does not belong to this model: it has vocab_sha256="):
        ENTRY_POINTS[entry](model, other)
    tokenizer.pad_token = tokenizer.eos_token  # a common change that keeps the vocabulary
    ENTRY_POINTS[entry](model, tokenizer)


def test_lm_eval_adapter_checks_the_pair(fake_gguf):
    from lenssample.integrations.lm_eval import LensSampleLM

    model, tokenizer = load_model(fake_gguf)
    with pytest.raises(ValueError, match="does not belong to this model"):
        LensSampleLM(model, make_tiny_tokenizer(prefix="w"))
    assert LensSampleLM(model, tokenizer).tokenizer is tokenizer


class _Tokenizer:
    eos_token_id = 500  # a larger model's EOS

    def encode(self, text, add_special_tokens=False):
        return [3, 4, 5]


def test_special_ids_outside_the_vocabulary_are_refused():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match=r"eos_token_id=500 is outside the model's vocabulary 0..95"):
        score_continuations(model, _Tokenizer(), "a", ["b"], FinalLayer())


def test_a_padded_vocabulary_passes():
    # 96 embedding rows for a tokenizer of 64 tokens: a padded vocabulary
    model, tokenizer = make_tiny_model("llama"), make_tiny_tokenizer(64)
    assert generate(model, "t5 t6", tokenizer=tokenizer, max_new_tokens=2).sequences.shape[1] == 4


@pytest.mark.real
@pytest.mark.slow
def test_gemma_and_smollm2_tokenizers_are_not_swapped(real_model):
    from lenssample.model.loading import cache_root

    if not (cache_root() / "models" / "gemma3-270m" / "config.json").exists():
        pytest.skip("gemma3-270m is not converted yet (see tests/model/test_loading.py)")
    smollm, smollm_tok = real_model
    gemma, gemma_tok = load_model("gemma3-270m")
    with pytest.raises(ValueError, match="tokenizer does not belong to this model: it has tokens=49152, but the "
                       "model was loaded with a tokenizer of tokens=262144"):  # fmt: skip
        generate(gemma, "Hello", tokenizer=smollm_tok, max_new_tokens=1)
    with pytest.raises(ValueError, match="tokenizer has 262144 tokens but the model's vocabulary has 49152"):
        generate(smollm, "Hello", tokenizer=gemma_tok, max_new_tokens=1)


def test_absurd_thread_counts_are_refused_and_a_bigger_machines_count_runs():
    """Fresh probe: torch.set_num_threads(100000) ends the process without a message. A count written for a bigger
    machine (up to 4x the cores) still runs: oversubscription is slow, not fatal."""
    cores = os.cpu_count() or 1
    assert check_threads(cores) == cores and check_threads(4 * cores) == 4 * cores
    with pytest.raises(ValueError, match=rf"threads={4 * cores + 1} must be an integer in 1..{4 * cores}\. This machine"):
        check_threads(4 * cores + 1)
