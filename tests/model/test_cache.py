"""The converted-model cache: manifests, rebuilding damaged copies, hashing on request, one conversion under a lock.

The slow part of a conversion (reading the GGUF file) is :func:`tests.conftest.fake_read_gguf`; everything after it
(writing, the manifest, the checks, the lock) is the real code.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

import lenssample.model.manifest as manifest
from lenssample.model.loading import load_model, resolve_model_dir
from lenssample.model.manifest import MANIFEST, folder_problem, sha256_file
from tests.conftest import LAYERS


def _conversions(gguf: Path) -> int:
    log = Path(f"{gguf}.conversions")
    return len(log.read_text().splitlines()) if log.exists() else 0


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _overwrite(path: Path, start: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(data)


DAMAGES = {  # what is done to the converted folder -> the file the one stderr line must name
    "truncated weights": (lambda f: _cut(f / "model.safetensors"), "model.safetensors"),
    "garbage weights header": (lambda f: _overwrite(f / "model.safetensors", 0, b"\xff" * 64), "model.safetensors"),
    "garbage config": (lambda f: (f / "config.json").write_text("garbage"), "config.json"),
    "truncated tokenizer": (lambda f: _cut(f / "tokenizer.json"), "tokenizer.json"),
    "config edited to fewer layers": (
        lambda f: _replace(f / "config.json", f'"num_hidden_layers": {LAYERS}', '"num_hidden_layers": 2'), "config.json"),
    "missing file": (lambda f: (f / "tokenizer_config.json").unlink(), "tokenizer_config.json"),
    "missing manifest": (lambda f: (f / MANIFEST).unlink(), MANIFEST),
}  # fmt: skip


def test_conversion_records_a_manifest(fake_gguf):
    folder = Path(resolve_model_dir(fake_gguf)[0])
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == "lenssample-converted-model" and manifest["source"]["kind"] == "gguf"
    assert manifest["source"]["gguf_sha256"] == sha256_file(fake_gguf)
    assert {"lenssample", "transformers", "torch"} <= set(manifest["made_by"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    assert folder_problem(folder, full=True) is None
    resolve_model_dir(fake_gguf)
    assert _conversions(fake_gguf) == 1  # the intact copy is used as it is


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_conversion_is_rebuilt_with_one_line(fake_gguf, capsys, damage):
    folder = Path(resolve_model_dir(fake_gguf)[0])
    harm, named = DAMAGES[damage]
    harm(folder)
    assert folder_problem(folder) is not None
    model, tokenizer = load_model(fake_gguf)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "damaged" in lines[0] and "rebuilding" in lines[0]
    assert _conversions(fake_gguf) == 2 and folder_problem(folder, full=True) is None
    assert model.config.num_hidden_layers == LAYERS and len(tokenizer) == model.config.vocab_size


def test_hashes_are_checked_on_request(fake_gguf, capsys, monkeypatch):
    # The tiny model's weights are small enough to be hashed at every load; a real model's are not.
    monkeypatch.setattr(manifest, "HASHED_ON_LOAD", 1 << 16)
    folder = Path(resolve_model_dir(fake_gguf)[0])
    weights = folder / "model.safetensors"
    _overwrite(weights, weights.stat().st_size - 8, b"\x7f" * 8)  # same size and header: only a hash sees it
    resolve_model_dir(fake_gguf)
    assert _conversions(fake_gguf) == 1 and not capsys.readouterr().err
    resolve_model_dir(fake_gguf, verify=True)
    assert _conversions(fake_gguf) == 2 and "model.safetensors was changed" in capsys.readouterr().err
    resolve_model_dir(fake_gguf, verify=True)
    assert _conversions(fake_gguf) == 2


def _convert_in_child(cache: str, gguf: str, barrier) -> None:
    import lenssample.model.loading as loading
    from tests.conftest import fake_read_gguf

    def slow(path):
        time.sleep(0.5)  # widen the window in which both would convert without the lock
        return fake_read_gguf(path)

    os.environ["LENSSAMPLE_CACHE"] = cache
    loading.read_gguf = slow
    barrier.wait()
    loading.resolve_model_dir(gguf)


def test_concurrent_processes_convert_once(fake_gguf, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    args = (str(tmp_path / "cache"), str(fake_gguf), barrier)
    processes = [ctx.Process(target=_convert_in_child, args=args) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=600)
    assert [p.exitcode for p in processes] == [0, 0]
    assert _conversions(fake_gguf) == 1
    (folder,) = (tmp_path / "cache" / "models").glob("tiny-*")
    assert folder_problem(folder, full=True) is None
    # nothing left beside it but the lock file: no temporary folder
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{folder.name}.lock", folder.name]
