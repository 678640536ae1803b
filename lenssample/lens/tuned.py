"""The tuned lens (Belrose et al. 2023, arXiv 2303.08112): one learned affine translator per layer.

Layer ``l < L`` is read as ``logits = unembed(final_norm(h + (W_l h + b_l)))`` (``placement="before_norm"``, the
paper's lens) or as ``logits = unembed(x + (W_l x + b_l))`` with ``x = final_norm(h)`` (``placement="after_norm"``);
layer ``L`` is untouched, so the tuned lens at ``L`` is the model's own logits, like the logit lens.

Why two placements. Before the norm, the translator cannot change the scale of what reaches the unembedding (RMSNorm
and LayerNorm remove it), so it cannot set the *temperature* of a layer's prediction, and its natural closed-form
fit matches directions with every coordinate weighted alike although the norm's gain weights them unequally. After
the norm, the map is plainly affine from the normed state to the final normed state: the closed-form fit is an
ordinary ridge regression in the space the unembedding reads, and it can soften or sharpen. On SmolLM2-135M the
after-norm closed-form fit has 20% lower held-out KL than the before-norm one at layer 10, and the trained after-norm
lens beats a before-norm lens (trained on half the tokens and steps) at every layer by 6-17%
(``evals/results/tuned_lens_placements.md``, Wikipedia-trained lenses), so ``lenssample train-lens`` uses it by default.

The model's final norm and unembedding are used frozen and are not part of the lens (see :class:`~lenssample.lens.base.Lens`): a lens holds only ``weight
[L, d, d]`` and ``bias [L, d]``. Both start at zero, so a fresh lens *is* the logit lens, and weight decay on the
residual translator pulls it toward the identity.

On disk a lens is a folder that can be uploaded to the Hugging Face hub as it is::

    config.json          format, version, the model's identity, training record
    model.safetensors    weight [L, d, d], bias [L, d]
    README.md            a short model card
    lenssample-manifest.json   size and SHA-256 of the other files: a damaged or edited lens is refused at load

The identity (model type, layer count, hidden size, vocabulary size, SHA-256 of the unembedding rounded to
bfloat16, so float32 and bfloat16 loads of one checkpoint match) is checked on load: a lens is refused by any other
model. Writes go to a temporary folder that is renamed into place, so a folder with the final name is complete.

The tuned-lens project's folders (``config.json`` + ``params.pt``) are read and written too, as before-norm lenses,
and its hub ids resolved: see :mod:`lenssample.lens.formats`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import lenssample.lens.formats as formats
from lenssample.lens.base import Lens, LogitLens, as_lens
from lenssample.model.adapters import model_parts
from lenssample.model.loading import DEFAULT_MODEL, cache_root
from lenssample.model.manifest import MANIFEST, folder_problem, staged_folder
from lenssample.validation import check_bool

FORMAT = "lenssample-tuned-lens"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
README_FILE = "README.md"
PLACEMENTS = ("before_norm", "after_norm")


def check_placement(placement: Any) -> str:
    """``placement`` if it is one of :data:`PLACEMENTS`, else a ``ValueError`` naming the choices."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}: pass one of {', '.join(map(repr, PLACEMENTS))}")
    return placement


def hidden_size(model: nn.Module) -> int:
    """The width of the residual stream, ``d_model``."""
    size = getattr(model.config, "hidden_size", None)
    if not isinstance(size, int):
        raise ValueError(f"model config has no integer hidden_size (got {size!r}); cannot size a tuned lens")
    return size


def unembed_sha256(model: nn.Module) -> str:
    """SHA-256 of the unembedding weight rounded to bfloat16 (cached on the model until the weight changes)."""
    weight = model_parts(model).unembed.weight
    key = (weight.data_ptr(), weight._version, weight.dtype)
    cached = model.__dict__.get("_lenssample_unembed_sha")
    if cached is not None and cached[0] == key:
        return cached[1]
    raw = weight.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()
    digest = hashlib.sha256(raw).hexdigest()
    model.__dict__["_lenssample_unembed_sha"] = (key, digest)
    return digest


def model_identity(model: nn.Module) -> dict[str, Any]:
    """What a saved lens records about its model, and checks on load."""
    parts = model_parts(model)
    return {
        "model_type": str(model.config.model_type),
        "num_layers": parts.num_layers,
        "d_model": hidden_size(model),
        "vocab_size": parts.vocab_size,
        "unembed_sha256": unembed_sha256(model),
    }


def default_lens_path(model_name: str | None = None) -> Path:
    """Where ``lenssample train-lens`` puts the lens of ``model_name`` by default (``None``: the default model).

    ``$LENSSAMPLE_CACHE/lenses/<model name>`` (default ``~/.cache/lenssample/lenses/<model name>``).
    """
    name = model_name or DEFAULT_MODEL
    safe = re.sub(r"[^A-Za-z0-9._-]+", "--", str(name).strip("/")) or DEFAULT_MODEL
    return cache_root() / "lenses" / safe


class TunedLens(Lens):
    """Logit lens plus a learned residual affine translator per layer ``0..L-1`` (identity at ``L``).

    Args:
        model: a Hugging Face causal LM supported by :mod:`lenssample.model.adapters`.
        apply_final_norm: as in :class:`~lenssample.lens.base.Lens` (the tuned lens is trained with the norm on).
        placement: ``"before_norm"`` (translate the raw residual stream, as in the paper) or ``"after_norm"``
            (translate the final-normed state; see the module docstring).

    Attributes:
        weight: ``[L, d_model, d_model]``; ``weight[l]`` maps ``h`` to ``W_l h`` (rows are outputs).
        bias: ``[L, d_model]``.
        training_info: JSON-serialisable record of how the lens was made (saved in ``config.json``).
    """

    def __init__(
        self, model: nn.Module, *, apply_final_norm: bool = True, placement: str = "before_norm"
    ) -> None:
        super().__init__(model, apply_final_norm=apply_final_norm)
        check_placement(placement)
        if placement == "after_norm" and not apply_final_norm:
            raise ValueError(
                "placement='after_norm' translates final-normed states, so apply_final_norm must be True"
            )
        self.placement = placement
        self.translates_after_norm = placement == "after_norm"
        d_model = hidden_size(model)
        device = self.parts.unembed.weight.device
        self.weight = nn.Parameter(torch.zeros(self.num_layers, d_model, d_model, device=device))
        self.bias = nn.Parameter(torch.zeros(self.num_layers, d_model, device=device))
        self.training_info: dict[str, Any] = {}

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[-1])

    def fingerprint(self) -> str:
        """The first 12 hex digits of the SHA-256 of the translators' values (float32, C order), for recording
        which lens produced a result: equal lenses give equal fingerprints, whatever file format they came from."""
        digest = hashlib.sha256()
        for tensor in (self.weight, self.bias):
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:12]

    def translate(self, hidden: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """``h + (W_l h + b_l)`` for each layer ``l < L`` along dimension -2, all layers in one batched product.

        Args:
            hidden: ``[..., n_layers, d_model]`` residual stream (final-normed for ``placement="after_norm"``).
            layers: the layer number of each slice along dimension -2.

        Returns:
            ``[..., n_layers, d_model]`` in the dtype of ``hidden``.
        """
        layers = tuple(layers)
        if hidden.shape[-2] != len(layers):
            raise ValueError(
                f"hidden has {hidden.shape[-2]} layer slices but layers has {len(layers)} entries; pass one layer "
                "number per slice along dimension -2"
            )
        inner = [i for i, layer in enumerate(layers) if layer < self.num_layers]
        if not inner:
            return hidden
        index = torch.tensor([layers[i] for i in inner], device=self.weight.device)
        selected = hidden if len(inner) == len(layers) else hidden[..., inner, :]
        # One batched matrix product over the requested layers: [..., k, d] x [k, d_out, d_in] -> [..., k, d_out].
        delta = torch.einsum("...ki,koi->...ko", selected.to(self.weight.dtype), self.weight[index])
        delta = delta + self.bias[index]
        translated = selected + delta.to(hidden.dtype)
        if len(inner) == len(layers):
            return translated
        out = hidden.clone()
        out[..., inner, :] = translated
        return out

    # ----------------------------------------------------------------------------------------------- storage
    def save(
        self, directory: str | os.PathLike, *, dtype: torch.dtype = torch.float32, format: str = "lenssample"
    ) -> Path:
        """Write the lens to ``directory`` (created or replaced atomically); returns its path.

        Args:
            directory: target folder. An existing folder is replaced only if it is empty or holds a tuned lens
                (either format).
            dtype: storage dtype of the tensors (``torch.float32`` or ``torch.float16``/``bfloat16`` to halve it).
            format: ``"lenssample"`` (config.json, model.safetensors, README.md) or ``"tuned-lens"`` (the
                tuned-lens project's config.json and params.pt, which its ``TunedLens.from_model_and_pretrained``
                loads; before-norm lenses only, and the training record is not kept).
        """
        formats.check_format(format)
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype={dtype}: save a tuned lens as torch.float32, float16 or bfloat16")
        target = Path(directory)
        if target.exists() and not _replaceable(target):
            raise ValueError(
                f"{str(target)!r} exists and is not a tuned-lens folder; choose a new or empty folder"
            )
        if format == "tuned-lens":
            if self.placement != "before_norm" or not self.apply_final_norm:
                raise ValueError(
                    "format='tuned-lens' stores a lens that translates the raw residual stream and then applies the "
                    f"final norm; this lens has placement={self.placement!r}, apply_final_norm="
                    f"{self.apply_final_norm}. Save it with format='lenssample'"
                )
            files = formats.tuned_lens_files(self.parts.model, self.weight, self.bias, dtype)
            write_folder_atomically(target, files, None, {"kind": "tuned lens", "format": format})
            return target
        config = {"format": FORMAT, "version": VERSION, "model": model_identity(self.parts.model),
                  "model_name": str(getattr(self.parts.model.config, "_name_or_path", "") or ""),
                  "apply_final_norm": self.apply_final_norm, "placement": self.placement,
                  "dtype": str(dtype).removeprefix("torch."), "training": self.training_info}  # fmt: skip
        files = {
            CONFIG_FILE: json.dumps(config, indent=2, sort_keys=True).encode(),
            README_FILE: _model_card(config).encode(),
        }
        tensors = {
            name: getattr(self, name).detach().to("cpu", dtype).contiguous() for name in ("weight", "bias")
        }
        write_folder_atomically(target, files, tensors, {"kind": "tuned lens", "format": format})
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike, model: nn.Module, *, verify: bool = False) -> TunedLens:
        """Read a lens onto ``model``; refuses a lens made for another model.

        ``directory`` is a folder saved by :meth:`save` in either format (told apart by its files: ``params.pt``
        makes a tuned-lens folder, read as a before-norm lens), or, when no such local folder exists, a tuned-lens
        hub id (``"gpt2"``, ``"EleutherAI/pythia-160m-deduped"``) resolved as tuned-lens resolves it (see
        :func:`lenssample.lens.formats.resolve_hub_lens`; offline, a lens not in the hub cache is refused at once).
        Every load checks the folder against its manifest (sizes, the safetensors header, the config's hash);
        ``verify`` also hashes the weights (a folder without a manifest, e.g. tuned-lens's, is then named in a
        warning as unverified).

        Raises:
            FileNotFoundError: the folder or one of its files is missing, or a hub lens cannot be had.
            ValueError: the config is not a tuned-lens config, belongs to another model, or the tensors are
                missing, have the wrong shapes or hold non-finite values.
        """
        folder = Path(directory)
        if folder.exists() and not folder.is_dir():
            raise FileNotFoundError(f"{str(folder)!r} is a file; pass the lens folder that holds config.json")
        if not folder.is_dir():
            if not formats.looks_like_hub_id(str(directory)):
                raise FileNotFoundError(
                    f"tuned lens folder {str(folder)!r} does not exist; train one with `lenssample train-lens`"
                )
            folder = formats.resolve_hub_lens(str(directory))
        # A folder without a manifest was saved before lenssample wrote them (or by tuned-lens): the checks below.
        check_bool(verify, field="verify")
        has_manifest = (folder / MANIFEST).is_file()
        if verify and not has_manifest:
            warnings.warn(f"the tuned lens in {str(folder)!r} has no {MANIFEST} (saved by tuned-lens or an older "
                          "lenssample), so its files cannot be verified; its shapes and values are checked at load",
                          stacklevel=2)  # fmt: skip
        problem = folder_problem(folder, full=verify) if has_manifest else None
        if problem:
            raise ValueError(
                f"the tuned lens in {str(folder)!r} is damaged: {problem}; a lens cannot be rebuilt, so train it "
                f"again with `lenssample train-lens --out {folder}` (or restore a copy)"
            )
        if formats.is_tuned_lens_folder(folder):
            lens = cls(model, placement="before_norm")
            weight, bias = formats.read_tuned_lens(folder, model, lens.num_layers, lens.d_model)
            with torch.no_grad():
                lens.weight.copy_(weight.to(lens.weight.dtype))
                lens.bias.copy_(bias.to(lens.bias.dtype))
            lens.training_info = {"source": "tuned-lens", "folder": str(folder)}
            return lens
        config = _read_config(folder)
        expected = model_identity(model)
        recorded = config["model"]
        for key, value in expected.items():
            if recorded.get(key) != value:
                raise ValueError(
                    f"the tuned lens in {str(folder)!r} was trained for another model: its {key} is "
                    f"{recorded.get(key)!r}, this model's is {value!r}; load it onto the model it was trained "
                    f"for ({config.get('model_name') or 'see config.json'}) or train a lens for this model"
                )
        placement = config.get("placement", "before_norm")  # lenses saved before placements existed
        if placement not in PLACEMENTS:
            raise ValueError(
                f"{str(folder / CONFIG_FILE)!r} has placement {placement!r}; this lenssample reads "
                f"{', '.join(map(repr, PLACEMENTS))}"
            )
        lens = cls(model, apply_final_norm=bool(config.get("apply_final_norm", True)), placement=placement)
        weights_path = folder / WEIGHTS_FILE
        if not weights_path.is_file():
            raise FileNotFoundError(f"{str(weights_path)!r} is missing; the tuned lens folder is incomplete")
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{str(weights_path)!r} is not a readable safetensors file ({err})") from err
        for name, param in (("weight", lens.weight), ("bias", lens.bias)):
            tensor = tensors.get(name)
            if tensor is None:
                raise ValueError(
                    f"{str(weights_path)!r} has no tensor {name!r} (found {sorted(tensors)}); re-save the lens"
                )
            if tuple(tensor.shape) != tuple(param.shape):
                raise ValueError(
                    f"{str(weights_path)!r}: tensor {name!r} has shape {tuple(tensor.shape)}, expected "
                    f"{tuple(param.shape)} for this model"
                )
            formats.check_finite(tensor, weights_path, name)
            with torch.no_grad():
                param.copy_(tensor.to(param.dtype))
        lens.training_info = dict(config.get("training") or {})
        return lens


def _replaceable(target: Path) -> bool:
    """Whether an existing ``target`` may be replaced: an empty folder or a tuned-lens folder."""
    if not target.is_dir() or not any(target.iterdir()):
        return target.is_dir()
    if formats.is_tuned_lens_folder(target):
        return True
    try:
        return json.loads((target / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; {str(folder)!r} is not a saved tuned lens")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); re-save the lens") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a lenssample tuned-lens config (format != {FORMAT!r})")
    if config.get("version") != VERSION:
        raise ValueError(
            f"{str(path)!r} has format version {config.get('version')!r}; this lenssample reads version {VERSION}"
        )
    if not isinstance(config.get("model"), dict):
        raise ValueError(f"{str(path)!r} has no 'model' identity record; re-save the lens")
    return config


def write_folder_atomically(
    target: Path, files: dict[str, bytes], tensors: dict[str, torch.Tensor] | None, source: dict[str, Any]
) -> None:
    """Write ``files`` and the safetensors :data:`WEIGHTS_FILE` of ``tensors`` (if any) as the folder ``target``,
    atomically and with a manifest recording ``source`` (:func:`lenssample.model.manifest.staged_folder`; the
    model card is left out of it, so that it may be edited)."""
    with staged_folder(target, "lenssample-lens", source, skip=(README_FILE,)) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if tensors:
            save_file(tensors, str(tmp / WEIGHTS_FILE))


def _model_card(config: dict[str, Any]) -> str:
    ident, training = config["model"], config.get("training") or {}
    where = "before the model's own final norm and unembedding"
    if config.get("placement") == "after_norm":
        where = "after the model's own final norm, before its unembedding"
    card = f"""---
library_name: lenssample
tags: [tuned-lens, interpretability]
---

# Tuned lens for {config.get("model_name") or ident["model_type"]}

A tuned lens (Belrose et al. 2023) for a {ident["model_type"]} model with {ident["num_layers"]} layers, \
d_model {ident["d_model"]}, vocabulary {ident["vocab_size"]}: one residual affine translator per layer \
(`weight [L, d, d]`, `bias [L, d]` in `model.safetensors`), applied {where}.

```python
from lenssample.lens.tuned import TunedLens
lens = TunedLens.load('THIS_FOLDER', model)   # refuses any other model (unembedding SHA-256 \
{ident["unembed_sha256"][:12]}...)
```

"""
    if not training:
        return card
    scalars = {k: v for k, v in sorted(training.items()) if isinstance(v, (int, float, str, bool))}
    record = json.dumps(scalars, indent=1)
    return f"{card}Training record (the full record, with held-out KL per layer, is in config.json):\n\n```json\n{record}\n```\n"


def load_lens(spec: Lens | str | os.PathLike | None, model: nn.Module, *, verify: bool = False) -> Lens:
    """The lens a config or command line names: ``"logit"`` (or ``None``), ``"tuned"`` (the cached tuned lens of a
    model from :func:`~lenssample.load_model`, where ``lenssample train-lens`` saves it: :func:`default_lens_path`),
    a saved tuned-lens folder (lenssample's or the tuned-lens project's format), a tuned-lens hub id, or a
    :class:`~lenssample.lens.base.Lens` object (checked to belong to ``model``). ``verify``: hash a saved lens's
    files against its manifest (:meth:`TunedLens.load`)."""
    if spec is None or not isinstance(spec, (str, os.PathLike)):  # a Lens, or a wrong type as_lens names
        return as_lens(model, spec)
    if str(spec) == "logit":
        return LogitLens(model)
    path = Path(spec).expanduser()
    if str(spec) == "tuned" and not path.exists():
        path = _cached_lens(model)
    return TunedLens.load(path if path.exists() else str(spec), model, verify=verify)


def _cached_lens(model: nn.Module) -> Path:
    """The folder of ``model``'s cached tuned lens (``lens="tuned"``), or an error saying how to make one."""
    if not hasattr(model, "lenssample_name"):
        raise ValueError(
            "lens='tuned' is the cached tuned lens of a model loaded with lenssample.load_model, which this model "
            "was not; pass the tuned lens's folder instead"
        )
    name = model.lenssample_name
    path = default_lens_path(name)
    if not path.is_dir():
        flag = f" --model {name}" if name else ""
        raise FileNotFoundError(
            f"lens='tuned': no tuned lens is cached for {name or DEFAULT_MODEL} (looked in {path}); train one with "
            f"`lenssample train-lens{flag}` (about 13 minutes on a 2-core CPU for the default model)"
        )
    return path
