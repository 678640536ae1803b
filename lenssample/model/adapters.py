"""Architecture knowledge, in one table keyed by ``config.model_type``.

A lens needs to know four things about a causal LM: where its transformer blocks are, where the final norm is,
where the unembedding is, and what the model does to its logits after the unembedding (Gemma-2's soft-capping,
Cohere's logit scale). Everything else (attention, rotary embeddings, caches) is left to the model's own
``forward``: lenssample never re-implements a forward pass, it only reads block outputs with hooks.

Register a new architecture with :func:`register_adapter`::

    from lenssample.model.adapters import Adapter, register_adapter
    register_adapter("my_model", Adapter(base="model", blocks="layers", final_norm="norm", unembed="lm_head"))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from lenssample.validation import did_you_mean

LogitsTransform = Callable[[torch.Tensor], torch.Tensor]


def _resolve(root: nn.Module, path: str | None) -> nn.Module | None:
    """Follow a dotted attribute path (``"model.decoder"``); ``None`` or ``""`` gives ``None``/``root``."""
    module = None if path is None else root
    for part in filter(None, (path or "").split(".")):
        module = getattr(module, part, None)  # stays None once a part is missing
    return module


@dataclass(frozen=True, kw_only=True)
class Adapter:
    """Where the pieces of one architecture live, as dotted paths.

    Attributes:
        base: path from the ``*ForCausalLM`` to the base model whose ``forward`` runs embeddings + blocks + final
            norm (``"model"``, ``"transformer"``, ``"gpt_neox"``, ``"model.decoder"``).
        blocks: path from the base model to the ``nn.ModuleList`` of transformer blocks.
        final_norm: path from the base model to the final norm; ``None`` for models without one.
        unembed: path from the ``*ForCausalLM`` to the output projection (``lm_head``); when absent, the model's
            ``get_output_embeddings()``.
        pre_unembed: path from the base model to a projection applied between the final norm and the unembedding
            (OPT-350m's ``project_out``), or ``None``.
        logits_transform: builds, from the config, the function the model applies to its logits after the
            unembedding (soft-capping, scaling); ``None`` when there is none.
        attention: path from a block to its self-attention module (``"self_attn"``), whose ``forward`` takes the
            block's own keyword arguments (masks, position embeddings, cache) and appends to the cache; ``None``
            when unknown (early exit's ``skipped_kv="propagate"`` is then refused).
        attention_norm: path from a block to the norm its attention input passes through (``"input_layernorm"``),
            ``None`` when the raw residual stream goes in (OLMo-2 normalises after attention), or a function
            ``block -> norm module or None`` for architectures where it depends on the config (OPT-350m).
    """

    base: str
    blocks: str
    final_norm: str | None
    unembed: str
    pre_unembed: str | None = None
    logits_transform: Callable[[object], LogitsTransform | None] | None = None
    attention: str | None = None
    attention_norm: str | Callable[[nn.Module], nn.Module | None] | None = None


def _softcap(config: object) -> LogitsTransform | None:
    cap = getattr(config, "final_logit_softcapping", None)
    return (lambda logits, cap=float(cap): torch.tanh(logits / cap) * cap) if cap else None


def _scaled(config: object, name: str, divide: bool = False) -> LogitsTransform | None:
    """Multiply (Cohere's ``logit_scale``) or divide (Granite's ``logits_scaling``) the logits by a config value."""
    scale = getattr(config, name, None)
    if scale is None or scale == 1.0:
        return None
    return (lambda x, s=float(scale): x / s) if divide else (lambda x, s=float(scale): x * s)


def _opt_norm(block: nn.Module) -> nn.Module | None:
    # OPT-350m (do_layer_norm_before=False) normalises after attention; the other sizes before.
    return block.self_attn_layer_norm if block.do_layer_norm_before else None


_COLUMNS = ("base", "blocks", "final_norm", "unembed", "attention", "attention_norm")


def _row(*paths: object, **more: object) -> Adapter:
    """An adapter from its paths in the order of ``_COLUMNS`` (read from transformers' modeling_*.py files)."""
    return Adapter(**dict(zip(_COLUMNS, paths)), **more)  # type: ignore[arg-type]


# Most decoder blocks normalise with `input_layernorm` and then call `self_attn`.
_LLAMA_LIKE = _row("model", "layers", "norm", "lm_head", "self_attn", "input_layernorm")
_GEMMA_LIKE = replace(_LLAMA_LIKE, logits_transform=_softcap)

ADAPTERS: dict[str, Adapter] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    # OLMo-2 normalises the attention *output* (post_attention_layernorm); its attention reads the raw stream.
    "olmo2": replace(_LLAMA_LIKE, attention_norm=None),
    "granite": replace(_LLAMA_LIKE, logits_transform=partial(_scaled, name="logits_scaling", divide=True)),
    "cohere": replace(_LLAMA_LIKE, logits_transform=partial(_scaled, name="logit_scale")),
    "gemma": _GEMMA_LIKE,
    "gemma2": _GEMMA_LIKE,
    "gemma3_text": _GEMMA_LIKE,
    "gpt2": _row("transformer", "h", "ln_f", "lm_head", "attn", "ln_1"),
    "gpt_neox": _row("gpt_neox", "layers", "final_layer_norm", "embed_out", "attention", "input_layernorm"),
    "opt": _row(
        "model.decoder",
        "layers",
        "final_layer_norm",
        "lm_head",
        "self_attn",
        _opt_norm,
        pre_unembed="project_out",
    ),
}


def register_adapter(model_type: str, adapter: Adapter, *, overwrite: bool = False) -> None:
    """Teach lenssample a new architecture (see the module docstring for an example)."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be an lenssample.model.adapters.Adapter, got {type(adapter).__name__}")
    if model_type in ADAPTERS and not overwrite:
        raise ValueError(f"model_type={model_type!r} already has an adapter; pass overwrite=True to replace")
    ADAPTERS[model_type] = adapter


def adapter_for(config: object) -> Adapter:
    """The adapter for ``config.model_type``, or a ``ValueError`` listing what is supported."""
    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]
    raise ValueError(
        f"model_type={model_type!r} is not supported by lenssample.{did_you_mean(model_type, ADAPTERS)} Supported: "
        f"{', '.join(sorted(ADAPTERS))}. To add it, register where its pieces live, e.g. "
        f"lenssample.model.adapters.register_adapter('{model_type}', lenssample.model.adapters.Adapter("
        "base='model', blocks='layers', final_norm='norm', unembed='lm_head'))"
    )


@dataclass(frozen=True)
class ModelParts:
    """The modules an :class:`Adapter`'s paths name, resolved on one model (``model`` is the ``*ForCausalLM``,
    ``len(blocks)`` the number of layers ``L``, ``unembed`` maps ``[d_model] -> [vocab]``, ``logits_transform``
    is built from the config), as the lens and the decoding loop use them.

    ``cache_kwarg`` is the name under which the base model takes its KV cache (``"cache"`` in recent transformers 5
    releases, ``"past_key_values"`` before).
    """

    model: nn.Module
    base: nn.Module
    blocks: nn.ModuleList
    final_norm: nn.Module | None
    pre_unembed: nn.Module | None
    unembed: nn.Module
    logits_transform: LogitsTransform | None
    cache_kwarg: str

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def vocab_size(self) -> int:
        return int(self.unembed.weight.shape[0])


def model_parts(model: nn.Module) -> ModelParts:
    """Resolve the adapter's paths on ``model`` (cached on the model object)."""
    cached = getattr(model, "_lenssample_parts", None)
    if cached is not None and cached.model is model:
        return cached
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"model must be a Hugging Face causal LM (a torch.nn.Module with a .config), got {type(model).__name__}"
        )
    adapter = adapter_for(model.config)
    base = _resolve(model, adapter.base)
    blocks = _resolve(base, adapter.blocks) if base is not None else None
    # Some models renamed their head across transformers versions (GPT-NeoX: embed_out -> lm_head).
    unembed = _resolve(model, adapter.unembed) or model.get_output_embeddings()
    if base is None or not isinstance(blocks, nn.ModuleList) or unembed is None:
        raise ValueError(
            f"the {model.config.model_type!r} adapter does not fit {type(model).__name__}: expected blocks at "
            f"{adapter.base}.{adapter.blocks} and the unembedding at {adapter.unembed}. Load the model with "
            "AutoModelForCausalLM, or register a matching adapter with lenssample.model.adapters.register_adapter"
        )
    cache_kwarg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    transform = adapter.logits_transform(model.config) if adapter.logits_transform else None
    final_norm, pre_unembed = _resolve(base, adapter.final_norm), _resolve(base, adapter.pre_unembed)
    parts = ModelParts(model, base, blocks, final_norm, pre_unembed, unembed, transform, cache_kwarg)
    object.__setattr__(model, "_lenssample_parts", parts)
    return parts


@dataclass(frozen=True)
class BlockAttention:
    """One block's self-attention module and the norm its input passes through first (``None``: identity)."""

    attention: nn.Module
    norm: nn.Module | None


def block_attentions(parts: ModelParts) -> list[BlockAttention]:
    """Per block, its self-attention module and pre-attention norm, from the adapter's ``attention`` fields
    (``ValueError`` when the adapter names no attention module, or its paths do not fit the model)."""
    adapter = adapter_for(parts.model.config)
    model_type = parts.model.config.model_type
    if adapter.attention is None:
        raise ValueError(
            f"model_type={model_type!r}: its adapter names no attention module (Adapter(attention=..., "
            "attention_norm=...))"
        )
    found, norm_path = [], adapter.attention_norm
    for index, block in enumerate(parts.blocks):
        attention = _resolve(block, adapter.attention)
        norm = norm_path(block) if callable(norm_path) else _resolve(block, norm_path)
        if attention is None or (isinstance(norm_path, str) and norm is None):
            raise ValueError(
                f"model_type={model_type!r}: block {index} has no {adapter.attention!r} / {norm_path!r} module; "
                "the adapter's attention paths do not fit this model"
            )
        found.append(BlockAttention(attention=attention, norm=norm))
    return found
