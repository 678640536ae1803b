"""The tuned-lens project's lens folders (PyPI ``tuned-lens``, Belrose et al.), read and written by lenssample.

A tuned-lens folder holds two files::

    config.json   {"base_model_name_or_path", "d_model", "num_hidden_layers", "bias", "base_model_revision",
                   "unembed_hash", "lens_type": "linear_tuned_lens"}
    params.pt     torch.save of the translators' state dict: "{i}.weight" [d, d], "{i}.bias" [d], i = 0..L-1

Its lens at translator ``i`` computes ``unembed(h + (W_i h + b_i))`` with ``unembed = final norm + unembedding`` and
``h = hidden_states[i]`` of the model's ``output_hidden_states`` (tuned-lens's training loop reads
``output.hidden_states[:-1]`` and calls ``lens(h, idx=i)`` for ``i, h in enumerate(...)``): ``hidden_states[0]``
is the embedding output and ``hidden_states[i]`` the output of ``i`` blocks, so translator ``i`` is lenssample's
layer ``i`` exactly, for ``i < L``; the last layer has no translator in either. That is lenssample's
``placement="before_norm"`` lens with ``weight[i] = W_i`` and ``bias[i] = b_i``.

The ``unembed_hash`` is tuned-lens's ``Unembed.unembedding_hash()``: the SHA-256 of
``numpy.array_str(W_U.float().numpy(), precision=1)``, ``W_U`` the output embedding's weight. It is reproduced
here with the same call under numpy's default print options (tuned-lens uses whatever options are active; a
default process has these). Note what it covers: numpy summarises arrays over 1000 elements, so the hash sees only
the first and last three rows and columns of ``W_U``, rounded to one decimal; it tells models apart, it does not
prove two unembeddings equal. Sizes (``d_model``, ``num_hidden_layers``) are checked as well.

Hub ids resolve as tuned-lens's ``load_lens_artifacts`` resolves them: a local folder holding both files wins;
otherwise ``config.json`` and ``params.pt`` are downloaded from the subfolder ``lens/<id>`` of the Hugging Face
*space* ``AlignmentResearch/tuned-lens`` (``$TUNED_LENS_REPO_ID`` and ``$TUNED_LENS_REPO_TYPE`` override the repo and
its type, as there). Without a network (``HF_HUB_OFFLINE=1``, or the hub's host not answering within a few
seconds) a lens already in the hub cache is used, and otherwise a ``FileNotFoundError`` says what to do at once
(instead of the hub client's retries, about 20 s).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

TL_CONFIG_FILE = "config.json"
TL_PARAMS_FILE = "params.pt"
TL_LENS_TYPE = "linear_tuned_lens"
TL_DEFAULT_REPO_ID = "AlignmentResearch/tuned-lens"
TL_DEFAULT_REPO_TYPE = "space"
TL_SUBFOLDER = "lens"
FORMATS = ("lenssample", "tuned-lens")
#: Seconds the hub's host is given to accept a connection before the hub counts as unreachable.
CONNECT_TIMEOUT_S = 3.0

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# numpy's default print options (numpy.set_printoptions' documented defaults).
_NUMPY_DEFAULTS = dict(precision=8, threshold=1000, edgeitems=3, linewidth=75, suppress=False, nanstr="nan",
                       infstr="inf", sign="-", floatmode="maxprec", legacy=False)  # fmt: skip


def check_format(fmt: Any) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a ``ValueError`` naming the choices."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r}: pass one of {', '.join(map(repr, FORMATS))}")
    return fmt


def tuned_lens_unembed_hash(model: nn.Module) -> str:
    """tuned-lens's ``Unembed(model).unembedding_hash()``: SHA-256 of the output embedding printed by numpy."""
    import hashlib

    import numpy as np

    weight = model.get_output_embeddings().weight
    array = weight.detach().cpu().float().numpy()
    with np.printoptions(**_NUMPY_DEFAULTS):
        text = np.array_str(array, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


def is_tuned_lens_folder(folder: Path) -> bool:
    """Whether ``folder`` is (or is meant to be) a tuned-lens folder rather than a lenssample one.

    ``params.pt`` decides; without it, a ``config.json`` with tuned-lens's keys and no lenssample ``format`` does.
    """
    if (folder / TL_PARAMS_FILE).is_file():
        return True
    try:
        config = json.loads((folder / TL_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(config, dict)
        and "format" not in config
        and ("lens_type" in config or "unembed_hash" in config)
    )


def check_finite(tensor: torch.Tensor, path: Path, name: str) -> None:
    """Refuse a lens tensor holding NaN or infinite values (a training run that diverged, or a damaged file)."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(
            f"{str(path)!r}: {name!r} holds NaN or infinite values; the lens is damaged (train it again with "
            "`lenssample train-lens`, or download it again)"
        )


def looks_like_hub_id(spec: str) -> bool:
    """Whether a lens argument that is not a local folder can be a tuned-lens hub id (``gpt2``, ``org/model``)."""
    return bool(_HUB_ID.match(spec)) and ".." not in spec


# ------------------------------------------------------------------------------------------------------- reading
def read_tuned_lens(
    folder: Path, model: nn.Module, num_layers: int, d_model: int
) -> tuple[torch.Tensor, ...]:
    """The translators of a tuned-lens folder as ``(weight [L, d, d], bias [L, d])`` in float32, checked.

    Raises:
        FileNotFoundError: ``config.json`` or ``params.pt`` is missing.
        ValueError: the config is not a linear tuned lens, or was made for a model of other sizes or another
            unembedding (``unembed_hash``), or ``params.pt`` is unreadable, has missing, extra or misshapen
            tensors, or holds NaN or infinite values.
    """
    config_path, params_path = folder / TL_CONFIG_FILE, folder / TL_PARAMS_FILE
    for path in (config_path, params_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} is missing; a tuned-lens folder holds {TL_CONFIG_FILE} and {TL_PARAMS_FILE} (as "
                "tuned-lens's TunedLens.save writes them)"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(config_path)!r} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{str(config_path)!r} is not a tuned-lens config (a JSON object)")
    lens_type = config.get("lens_type", TL_LENS_TYPE)
    if lens_type != TL_LENS_TYPE:
        raise ValueError(
            f"{str(config_path)!r} has lens_type {lens_type!r}; lenssample reads {TL_LENS_TYPE!r}"
        )
    made_for = config.get("base_model_name_or_path") or "see config.json"
    for key, value in (("d_model", d_model), ("num_hidden_layers", num_layers)):
        if config.get(key) != value:
            raise ValueError(
                f"the tuned-lens lens in {str(folder)!r} was made for another model: its {key} is "
                f"{config.get(key)!r}, this model's is {value!r}; load it onto the model it was made for ({made_for})"
            )
    recorded = config.get("unembed_hash")
    if recorded:
        actual = tuned_lens_unembed_hash(model)
        if recorded != actual:
            raise ValueError(
                f"the tuned-lens lens in {str(folder)!r} was made for another model: its unembed_hash is "
                f"{recorded[:16]}..., this model's unembedding hashes to {actual[:16]}... (tuned-lens's hash of the "
                f"output embedding); load it onto the model it was made for ({made_for})"
            )
    try:
        state = torch.load(params_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise ValueError(
            f"{str(params_path)!r} is not a readable tensor file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(state, dict):
        raise ValueError(
            f"{str(params_path)!r} holds a {type(state).__name__}, not a state dict of translators"
        )
    has_bias = bool(config.get("bias", True))
    expected = {f"{i}.weight": (d_model, d_model) for i in range(num_layers)}
    if has_bias:
        expected.update({f"{i}.bias": (d_model,) for i in range(num_layers)})
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{str(params_path)!r} does not hold the {num_layers} translators of this model: missing "
            f"{missing[:4] or 'none'}, unexpected {extra[:4] or 'none'} (bias={has_bias} in {TL_CONFIG_FILE})"
        )
    for name, shape in expected.items():
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"{str(params_path)!r}: {name!r} has shape {got}, expected {shape} for this model"
            )
        check_finite(tensor, params_path, name)
    weight = torch.stack([state[f"{i}.weight"].float() for i in range(num_layers)])
    bias = (
        torch.stack([state[f"{i}.bias"].float() for i in range(num_layers)])
        if has_bias
        else torch.zeros(num_layers, d_model)
    )
    return weight, bias


# ------------------------------------------------------------------------------------------------------- writing
def tuned_lens_files(
    model: nn.Module, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype
) -> dict[str, bytes]:
    """The two files of a tuned-lens folder for translators ``weight [L, d, d]``, ``bias [L, d]``.

    ``config.json`` has exactly the fields of tuned-lens's ``TunedLensConfig`` (it warns about any other key).
    """
    config = model.config
    num_layers, d_model = int(weight.shape[0]), int(weight.shape[-1])
    record = {
        "base_model_name_or_path": str(getattr(config, "_name_or_path", "") or ""),
        "d_model": d_model,
        "num_hidden_layers": num_layers,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": tuned_lens_unembed_hash(model),
        "lens_type": TL_LENS_TYPE,
    }
    state: dict[str, torch.Tensor] = {}
    for i in range(num_layers):
        state[f"{i}.weight"] = weight[i].detach().to("cpu", dtype).contiguous().clone()
        state[f"{i}.bias"] = bias[i].detach().to("cpu", dtype).contiguous().clone()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {TL_CONFIG_FILE: json.dumps(record).encode(), TL_PARAMS_FILE: buffer.getvalue()}


# ------------------------------------------------------------------------------------------------------- the hub
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached now (``None``: it may be), found in at most a few seconds.

    ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, or the endpoint's host not accepting a TCP connection
    within :data:`CONNECT_TIMEOUT_S`. With a proxy configured the check is left to the hub client.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        return f"{host}:{port} cannot be reached ({err.strerror or err})"
    return None


def resolve_hub_lens(resource_id: str) -> Path:
    """The local folder of tuned-lens's hub lens ``resource_id`` (downloaded into the hub cache if needed).

    Raises:
        FileNotFoundError: the hub has no such lens, or cannot be reached and the lens is not cached; the message
            says what to do.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = os.environ.get("TUNED_LENS_REPO_ID") or TL_DEFAULT_REPO_ID
    repo_type = os.environ.get("TUNED_LENS_REPO_TYPE") or TL_DEFAULT_REPO_TYPE
    subfolder = f"{TL_SUBFOLDER}/{resource_id}"
    where = f"{subfolder}/ of the Hugging Face {repo_type} {repo_id}"
    reason = hub_unreachable_reason()

    def download(filename: str) -> Path:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, subfolder=subfolder,
                                    repo_type=repo_type, local_files_only=reason is not None))  # fmt: skip

    def offline(why: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{resource_id!r} is not a local folder, and tuned-lens's hub lens for it ({where}) cannot be "
            f"downloaded: {why}, and it is not in the hub cache. Connect to the network (unset HF_HUB_OFFLINE) "
            f"and run this once to cache it, or pass a local folder holding {TL_CONFIG_FILE} and {TL_PARAMS_FILE}"
        )

    try:
        paths = [download(TL_CONFIG_FILE), download(TL_PARAMS_FILE)]
    except LocalEntryNotFoundError as err:
        raise offline(reason or f"the hub did not answer ({err})") from err
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise FileNotFoundError(
            f"{resource_id!r} is not a local folder, and the tuned-lens hub has no lens for it ({where} does not "
            f"hold {TL_CONFIG_FILE} and {TL_PARAMS_FILE}); pass a local lens folder or train one with "
            "`lenssample train-lens`"
        ) from err
    except HfHubHTTPError as err:
        raise FileNotFoundError(
            f"downloading tuned-lens's hub lens {resource_id!r} ({where}) failed: {err}"
        ) from err
    if paths[0].parent != paths[1].parent:  # both come from one snapshot folder
        raise FileNotFoundError(f"the hub cache holds {paths[0]} and {paths[1]} in different folders")
    return paths[0].parent
