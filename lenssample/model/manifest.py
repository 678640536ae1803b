"""Manifests of the folders lenssample writes (converted models, saved lenses), and the atomic write of a folder.

``lenssample-manifest.json`` sits beside the files it describes::

    {"format": "lenssample-converted-model", "version": 1, "created": "...", "source": {what it was made from},
     "made_by": {"lenssample": "0.1.0", "transformers": ..., "torch": ..., "safetensors": ...},
     "files": {"model.safetensors": {"size": 538090408, "sha256": "...", "header_sha256": "..."}, ...}}

Checks come in two strengths. Every load (``full=False``) reads no large file: each listed file must exist with its
recorded size, files up to :data:`HASHED_ON_LOAD` bytes (the configs) must match their SHA-256, and each safetensors
file's header must parse, match its recorded hash and end where the file ends. ``full=True`` (``lenssample doctor``,
``load_model(verify=True)``) hashes every file: about a second per GB.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MANIFEST = "lenssample-manifest.json"
#: Files up to this size are hashed at every load: a config edited in place keeps its size.
HASHED_ON_LOAD = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file; ``ValueError`` unless it parses and its tensors end where the file
    does (a truncated or padded file)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            raise ValueError("its header is cut off")
        header = handle.read(length)
    try:
        table = json.loads(header)
        end = max((t["data_offsets"][1] for k, t in table.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(f"its header does not parse ({type(err).__name__})") from err
    if 8 + length + end != size:
        raise ValueError(f"its tensors end at byte {8 + length + end} but the file has {size} bytes")
    return header


def _entry(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    if path.suffix == ".safetensors":
        entry["header_sha256"] = hashlib.sha256(safetensors_header(path)).hexdigest()
    return entry


def write_manifest(folder: Path, kind: str, source: dict[str, Any], *, skip: Sequence[str] = ()) -> None:
    """Record every file of ``folder`` except ``skip`` (files a user may edit, like a model card)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in (MANIFEST, *skip))
    made_by = {name: importlib.import_module(name).__version__
               for name in ("lenssample", "transformers", "torch", "safetensors")}  # fmt: skip
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {"format": kind, "version": 1, "created": created, "source": source, "made_by": made_by,
              "files": {name: _entry(folder / name) for name in names}}  # fmt: skip
    (folder / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True))


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or ``None`` when it has none or it is unreadable."""
    try:
        record = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def folder_problem(folder: Path, *, full: bool = False) -> str | None:
    """What is wrong with ``folder`` by its manifest, in a few words naming the file (``None``: nothing found)."""
    if not folder.is_dir():
        return "the folder is missing"
    record = read_manifest(folder)
    if record is None:
        return f"{MANIFEST} is missing or unreadable"
    try:
        for name, entry in record["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != entry["size"]:
                return f"{name} has {size} bytes, its manifest says {entry['size']}"
            if path.suffix == ".safetensors":
                try:
                    header = safetensors_header(path)
                except ValueError as err:
                    return f"{name} is damaged: {err}"
                if hashlib.sha256(header).hexdigest() != entry["header_sha256"]:
                    return f"{name} has another header than its manifest records"
            if (full or size <= HASHED_ON_LOAD) and sha256_file(path) != entry["sha256"]:
                return f"{name} was changed (its SHA-256 differs from the manifest's)"
    except (KeyError, TypeError, AttributeError) as err:
        return f"{MANIFEST} is malformed ({type(err).__name__}: {err})"
    return None


@contextmanager
def staged_folder(
    target: Path, kind: str, source: dict[str, Any], *, skip: Sequence[str] = ()
) -> Iterator[Path]:
    """Yields a temporary sibling of ``target`` to write into; then records its manifest, syncs it and renames it to
    ``target``, so that a folder under the final name is always complete. An existing ``target`` is moved aside
    first and deleted after; on any error the temporary folder is removed and ``target`` left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        yield tmp
        write_manifest(tmp, kind, source, skip=skip)
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
