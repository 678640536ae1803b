"""Lenses: from a layer's residual stream to next-token logits.

Layer numbering: ``0`` is the embedding output, ``i`` the output of ``i`` blocks, ``L`` the last block's output.
A lens receives the *pre-norm* residual stream (see :mod:`lenssample.model.capture`) and maps it to logits:

    logits = transform(unembed(pre_unembed(final_norm(translate(h)))))

where ``translate`` is the identity for the logit lens and a learned affine map for the tuned lens (which may
instead act after the final norm, ``translate(final_norm(h))``: see ``translates_after_norm``), and
``transform`` is the model's own post-processing of logits (e.g. Gemma-2's soft-cap). At layer ``L`` the
translation is always the identity and the final norm is always applied, so the lens at ``L`` *is*
``model(...).logits``. Many layers are projected in one matrix product: the unembedding sees
``[..., n_layers, d_model]`` at once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from numbers import Integral

import torch
from torch import nn

from lenssample.model.adapters import ModelParts, model_parts
from lenssample.validation import check_lens_logits


class Lens(nn.Module):
    """Base class of the logit lens and the tuned lens.

    The model's modules are *not* registered as submodules: a lens's ``parameters()`` and ``state_dict()`` hold
    only what the lens itself learns (nothing, for the logit lens).

    Args:
        model: a Hugging Face causal LM supported by :mod:`lenssample.model.adapters`.
        apply_final_norm: normalise intermediate layers with the model's final norm before unembedding (the correct
            logit lens). ``False`` skips the norm for layers ``< L`` only, for parity with implementations that
            unembed raw hidden states (transformers' DoLa); layer ``L`` is always the model's own logits.
    """

    def __init__(self, model: nn.Module, *, apply_final_norm: bool = True) -> None:
        super().__init__()
        self.__dict__["parts"] = model_parts(model)
        self.apply_final_norm = bool(apply_final_norm)

    parts: ModelParts
    #: Whether :meth:`translate` acts on the final-normed state (after the norm) instead of the raw residual stream.
    translates_after_norm: bool = False

    @property
    def num_layers(self) -> int:
        """``L``, the number of blocks; valid layers are ``0..L``."""
        return self.parts.num_layers

    @property
    def vocab_size(self) -> int:
        return self.parts.vocab_size

    def check_layers(self, layers: Sequence[int], *, name: str = "layers") -> tuple[int, ...]:
        """Validate layer numbers at the API boundary (negative ones count from the end, as in strategies: -1 is the
        final layer ``L``); returns them as a tuple of ``0..L``."""
        if isinstance(layers, torch.Tensor):
            layers = layers.tolist()
        if isinstance(layers, str) or not isinstance(layers, Iterable):
            raise TypeError(f"{name}={layers!r} must be a list of layer numbers, e.g. [0, {self.num_layers}]")
        out = tuple(layers)
        count = self.num_layers + 1
        for layer in out:
            # numpy ints are layer numbers too (np.arange, np.array([...]))
            if isinstance(layer, bool) or not isinstance(layer, Integral) or not -count <= layer < count:
                raise ValueError(
                    f"{name} contains {layer!r}, but this model has layers 0..{self.num_layers} (0 = embeddings, "
                    f"{self.num_layers} = final layer; -1..-{count} count from the end); pass layer numbers in that "
                    "range"
                )
        return tuple(int(layer) % count for layer in out)

    def with_final_norm(self, apply_final_norm: bool) -> Lens:
        """This lens, or a shallow copy sharing its parameters with another ``apply_final_norm``."""
        if apply_final_norm == self.apply_final_norm:
            return self
        if self.translates_after_norm and not apply_final_norm:
            raise ValueError(
                f"{type(self).__name__} translates final-normed states, so it cannot be used with "
                "apply_final_norm=False (a strategy in transformers-parity mode); use the logit lens for that"
            )
        other = copy.copy(self)
        other.apply_final_norm = bool(apply_final_norm)
        return other

    def translate(self, hidden: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """Per-layer correction of the residual stream (identity here), before or after the final norm.

        Args:
            hidden: ``[..., n_layers, d_model]``.
            layers: the layer number of each slice along dimension -2.
        """
        return hidden

    def normalize(self, hidden: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """Apply the final norm (all layers, or only layer ``L`` when ``apply_final_norm`` is off)."""
        norm = self.parts.final_norm
        if norm is None:
            return hidden
        if self.apply_final_norm:
            return norm(hidden)
        if self.num_layers not in layers:
            return hidden
        index = list(layers).index(self.num_layers)
        hidden = hidden.clone()
        hidden[..., index, :] = norm(hidden[..., index, :])
        return hidden

    def forward(
        self, hidden: torch.Tensor, layers: Sequence[int], *, projection: nn.Module | None = None
    ) -> torch.Tensor:
        """Map residual streams to logits.

        Args:
            hidden: ``[..., n_layers, d_model]`` pre-norm residual stream of ``layers``.
            layers: layer numbers, one per slice along dimension -2.
            projection: the unembedding computed another way (a weight layout, a lower precision); ``None``: the
                model's.

        Returns:
            ``logits: [..., n_layers, vocab]`` in float32.

        Raises:
            ValueError: the logits of a layer hold NaN or ``+inf`` (naming the first such layer, and whether its
                residual stream or the lens is broken): a strategy must not silently read or skip it.
        """
        logits = self.project(hidden, layers, projection=projection)

        def fix() -> str:  # which one is broken (looked at on failure only)
            if bool(torch.isfinite(hidden).all()):
                return f"the {type(self).__name__}'s parameters or the unembedding are damaged; reload or re-train it"
            return ("the model's residual stream there already holds NaN or infinite values (its computation "
                    "overflowed or its weights are damaged); check the model's dtype and weights, or read other layers")  # fmt: skip

        check_lens_logits(logits, layers, source=type(self).__name__, fix=fix)
        return logits

    def project(
        self, hidden: torch.Tensor, layers: Sequence[int], *, projection: nn.Module | None = None
    ) -> torch.Tensor:
        """:meth:`forward` without the finiteness check (compiled graphs check their output instead).

        Args:
            projection: a module computing the unembedding in another weight layout; ``None``: the model's.
        """
        if not self.translates_after_norm:
            hidden = self.translate(hidden, layers)
        hidden = self.normalize(hidden, layers)
        if self.translates_after_norm:
            hidden = self.translate(hidden, layers)
        if self.parts.pre_unembed is not None:
            hidden = self.parts.pre_unembed(hidden)
        logits = (projection(hidden) if projection is not None else unembed(self.parts, hidden)).float()
        if self.parts.logits_transform is not None:
            logits = self.parts.logits_transform(logits)
        return logits


# On CPU, MKL multiplies a few rows by the [vocab, d_model] unembedding (what nn.Linear computes) at a fraction of
# the memory bandwidth it reaches with other layouts of the same product, and decoding is bandwidth bound:
# - one row (FinalLayer decoding at batch 1): against a transposed, contiguous [d_model, vocab] copy of the weight
#   it runs about twice as fast;
# - a few rows (a strategy reading several layers, small batches): ``W @ x.T`` (a GEMM with a narrow right-hand
#   side) runs about twice as fast as ``x @ W.T``.
# Both sum in another order than nn.Linear: logits differ at float32 rounding level (tested against the module;
# greedy tokens equal model.generate's in the tests).
# Past ~64 rows (scoring, big batches) the plain GEMM is compute bound and as good as any.
_ONE_ROW, _FEW_ROWS = 1, 64


def unembed(parts: ModelParts, hidden: torch.Tensor) -> torch.Tensor:
    """``hidden: [..., d_model] -> [..., vocab]`` through the model's unembedding (fast paths for few rows on CPU)."""
    module = parts.unembed
    rows = hidden.numel() // hidden.shape[-1]
    if (
        rows > _FEW_ROWS
        or hidden.device.type != "cpu"
        or type(module) is not nn.Linear
        or torch.is_grad_enabled()
    ):
        return module(hidden)
    weight = module.weight
    x = hidden.to(weight.dtype)
    if rows == _ONE_ROW:
        key = (weight.data_ptr(), weight._version, weight.dtype)
        cached = parts.model.__dict__.get("_lenssample_unembed_t")
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().t().contiguous())
            parts.model.__dict__["_lenssample_unembed_t"] = cached
        out = x @ cached[1]
    else:
        flat = x.reshape(rows, x.shape[-1])
        # contiguous: the strategies' reductions over the vocabulary run 4-10x slower on the transposed view
        out = (weight @ flat.t()).t().contiguous().reshape(*x.shape[:-1], weight.shape[0])
    return out + module.bias if module.bias is not None else out


class LogitLens(Lens):
    """The logit lens (nostalgebraist, 2020): the model's final norm and unembedding applied to any layer."""


def as_lens(model: nn.Module, lens: Lens | None) -> Lens:
    """The given lens (checked to belong to ``model``) or a fresh :class:`LogitLens`."""
    if lens is None:
        return LogitLens(model)
    if not isinstance(lens, Lens):
        raise TypeError(f"lens must be a lenssample Lens (LogitLens, TunedLens), got {type(lens).__name__}")
    if lens.parts.model is not model:
        raise ValueError("lens was built for a different model object; build it with this model")
    return lens
