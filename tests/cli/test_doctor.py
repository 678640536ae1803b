"""``lenssample doctor``: one line per cached model and lens; rebuilds what it can, exit 2 for what it cannot."""

from __future__ import annotations

from pathlib import Path

from lenssample.cli import main
from lenssample.lens.tuned import default_lens_path
from lenssample.model.loading import resolve_model_dir
from lenssample.model.manifest import MANIFEST
from tests.conftest import make_tiny_model
from tests.lens.test_tuned_lens import _random_lens
from tests.model.test_cache import _conversions, _overwrite


def _doctor(capsys, *args: str) -> tuple[int, dict[str, str]]:
    """Exit status and ``{folder name: status word}`` from stdout (one line per item)."""
    status = main(["doctor", *args])
    lines = capsys.readouterr().out.strip().splitlines()
    return status, {Path(line.split()[1].rstrip(":")).name: line.split()[0] for line in lines}


def test_an_empty_cache(fake_gguf, capsys):
    assert main(["doctor"]) == 0
    assert "nothing cached in" in capsys.readouterr().out


def test_doctor_checks_rebuilds_and_reports(fake_gguf, tmp_path, capsys):
    model_dir = Path(resolve_model_dir(fake_gguf)[0])
    model = make_tiny_model("llama")
    cached_lens = _random_lens(model).save(default_lens_path("tiny"))
    mine, old = _random_lens(model).save(tmp_path / "mine"), _random_lens(model).save(tmp_path / "old")
    (old / MANIFEST).unlink()  # saved before manifests
    assert _doctor(capsys, str(mine), str(old)) == (
        0, {model_dir.name: "ok", "tiny": "ok", "mine": "ok", "old": "unchecked"})  # fmt: skip

    weights = model_dir / "model.safetensors"
    _overwrite(weights, weights.stat().st_size - 4, b"\x7f" * 4)  # damage that only a hash finds
    assert _doctor(capsys) == (0, {model_dir.name: "rebuilt", "tiny": "ok"})
    assert _conversions(fake_gguf) == 2 and _doctor(capsys)[1][model_dir.name] == "ok"

    (cached_lens / "model.safetensors").write_bytes(b"\0" * 16)  # a lens cannot be rebuilt
    status = main(["doctor"])
    out = capsys.readouterr().out
    assert status == 2 and "damaged" in out and "model.safetensors has 16 bytes" in out
    assert "lenssample train-lens --out" in out

    (model_dir / "config.json").write_text("garbage")
    fake_gguf.unlink()  # nor can a model whose GGUF file is gone
    status, report = _doctor(capsys)
    assert status == 2 and report == {model_dir.name: "damaged", "tiny": "damaged"}


def test_verify_flag_hashes_the_model_and_the_lens_before_use(fake_gguf, tmp_path, capsys, monkeypatch):
    """Every load checks sizes, headers and configs; damage of the same size inside the weights is found only by a
    hash: ``--verify`` rebuilds such a model from its GGUF file and refuses such a lens (exit 2, one line)."""
    import lenssample.model.manifest as manifest

    monkeypatch.setattr(manifest, "HASHED_ON_LOAD", 0)  # the tiny files would all be hashed at every load
    model_dir = Path(resolve_model_dir(fake_gguf)[0])
    lens = _random_lens(make_tiny_model("llama")).save(tmp_path / "lens")
    command = ["lens", "hello world", "--model", str(fake_gguf), "--lens", str(lens)]
    weights = model_dir / "model.safetensors"
    _overwrite(weights, weights.stat().st_size - 4, b"\x00" * 4)  # a finite value changed in place
    assert main(command) == 0 and _conversions(fake_gguf) == 1  # the cheap checks cannot see it
    assert main([*command, "--verify"]) == 0 and _conversions(fake_gguf) == 2  # rebuilt, then used
    capsys.readouterr()

    lens_weights = lens / "model.safetensors"
    _overwrite(lens_weights, lens_weights.stat().st_size - 4, b"\x00" * 4)
    assert main(command) == 0
    capsys.readouterr()
    assert main([*command, "--verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors was changed" in err[0] and "train-lens --out" in err[0]


def test_verify_warns_that_a_lens_without_manifest_cannot_be_verified(tmp_path):
    import pytest

    from lenssample.lens.tuned import TunedLens

    model = make_tiny_model("llama")
    folder = _random_lens(model).save(tmp_path / "old", format="tuned-lens")
    (folder / MANIFEST).unlink()
    with pytest.warns(UserWarning, match="has no lenssample-manifest.json .* cannot be verified"):
        TunedLens.load(folder, model, verify=True)
    with pytest.raises(ValueError, match="verify='yes' must be true or false"):
        TunedLens.load(folder, model, verify="yes")
