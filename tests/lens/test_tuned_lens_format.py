"""The tuned-lens project's lens folders (config.json + params.pt): read, written, checked against its own code.

Tests marked with the ``tuned_lens`` fixture run the tuned-lens package (PyPI ``tuned-lens`` 0.2.0, installed by
``make setup`` with ``--no-deps``) and skip only when it is not installed; the others need nothing but lenssample.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from lenssample.cli import main
from lenssample.lens import formats
from lenssample.lens.tuned import TunedLens, load_lens
from lenssample.model.capture import run_layers
from lenssample.model.manifest import MANIFEST
from tests.conftest import LAYERS, VOCAB, make_tiny_model

#: The architectures tuned-lens 0.2.0 knows (its model_surgery.get_final_norm) among the tiny test models.
TL_ARCHITECTURES = ["gpt2", "gpt_neox", "llama", "opt"]
TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tuned_lens():
    """The tuned-lens package's ``tuned_lens.nn`` module; skips when the package is absent."""
    return pytest.importorskip(
        "tuned_lens.nn",
        reason="the tuned-lens package is not installed (make setup installs tuned-lens==0.2.0 with --no-deps)",
    )


def _ids(seed: int, n: int = 10, batch: int = 2) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def _random_lens(model, seed: int = 0) -> TunedLens:
    lens = TunedLens(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.weight.copy_(0.1 * torch.randn(lens.weight.shape, generator=gen))
        lens.bias.copy_(0.1 * torch.randn(lens.bias.shape, generator=gen))
    return lens


def _their_logits(their_lens, hidden_states) -> torch.Tensor:
    """tuned-lens's own forward on layer i's hidden state, for every layer with a translator: [..., L, vocab]."""
    with torch.no_grad():
        return torch.stack([their_lens(hidden_states[i], idx=i) for i in range(LAYERS)], dim=-2)


def _our_logits(lens, hidden_states) -> torch.Tensor:
    with torch.no_grad():
        return lens(torch.stack(hidden_states[:LAYERS], dim=-2), list(range(LAYERS)))


@pytest.mark.parametrize("arch", TL_ARCHITECTURES)
def test_a_lens_tuned_lens_saved_gives_its_logits_in_lenssample(arch, tuned_lens, tmp_path):
    model = make_tiny_model(arch)
    theirs = tuned_lens.TunedLens.from_model(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for translator in theirs:
            translator.weight.copy_(0.1 * torch.randn(translator.weight.shape, generator=gen))
            translator.bias.copy_(0.1 * torch.randn(translator.bias.shape, generator=gen))
    theirs.save(tmp_path / "tl")
    assert sorted(p.name for p in (tmp_path / "tl").iterdir()) == ["config.json", "params.pt"]
    # the hash is tuned-lens's own: its Unembed hashes this model's unembedding to what lenssample computes
    assert theirs.config.unembed_hash == formats.tuned_lens_unembed_hash(model)

    ids = _ids(2)
    with torch.no_grad():
        hidden_states = model(ids, output_hidden_states=True).hidden_states
    # tuned-lens feeds translator i with hidden_states[i] (i < L); lenssample's layer i is the same tensor
    captured = run_layers(model, ids, list(range(LAYERS)), use_cache=False, keep=None).hidden
    for i in range(LAYERS):
        assert torch.equal(captured[..., i, :], hidden_states[i])

    for ours in (TunedLens.load(tmp_path / "tl", model), load_lens(str(tmp_path / "tl"), model)):
        assert ours.placement == "before_norm" and ours.apply_final_norm
        expected, got = _their_logits(theirs, hidden_states), _our_logits(ours, hidden_states)
        assert (got - expected).abs().max().item() <= TOLERANCE
        # and the translators really matter: the logit lens differs
        assert (
            TunedLens(model)(torch.stack(hidden_states[:LAYERS], -2), range(LAYERS)) - expected
        ).abs().max() > 0.1
    # the last layer has no translator in either: the lens there is the model's own logits
    final = run_layers(model, ids, [LAYERS], use_cache=False, keep=None).hidden
    with torch.no_grad():
        assert torch.allclose(ours(final, [LAYERS])[..., 0, :], model(ids).logits, atol=TOLERANCE)


@pytest.mark.parametrize("arch", TL_ARCHITECTURES)
def test_a_lens_lenssample_saved_loads_in_tuned_lens(arch, tuned_lens, tmp_path, caplog):
    model = make_tiny_model(arch)
    ours = _random_lens(model, seed=3)
    folder = ours.save(tmp_path / "lens", format="tuned-lens")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", MANIFEST, "params.pt"]
    config = json.loads((folder / "config.json").read_text())
    fields = set(tuned_lens.TunedLensConfig.__dataclass_fields__)
    assert set(config) == fields  # no key tuned-lens would warn about, none missing
    with caplog.at_level("WARNING"):
        theirs = tuned_lens.TunedLens.from_model_and_pretrained(model, str(folder))
    assert not [r for r in caplog.records if "hash" in r.getMessage()]  # tuned-lens's own hash check passes
    assert len(theirs) == LAYERS and config["unembed_hash"] == theirs.config.unembed_hash
    with torch.no_grad():
        hidden_states = model(_ids(4), output_hidden_states=True).hidden_states
    diff = (_their_logits(theirs, hidden_states) - _our_logits(ours, hidden_states)).abs().max().item()
    assert diff <= TOLERANCE


def test_tuned_lens_format_round_trips_in_lenssample(tmp_path):
    model = make_tiny_model("llama")
    lens = _random_lens(model)
    folder = lens.save(tmp_path / "lens", format="tuned-lens")
    loaded = TunedLens.load(folder, model)
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    # saving again over it (either format) replaces it; a half-precision save is read back in float32
    lens.save(folder, format="tuned-lens", dtype=torch.bfloat16)
    assert torch.equal(TunedLens.load(folder, model).weight, lens.weight.to(torch.bfloat16).float())
    lens.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "lenssample-manifest.json", "model.safetensors"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]
    with pytest.raises(ValueError, match="format='bin'.*'lenssample', 'tuned-lens'"):
        lens.save(folder, format="bin")


def test_only_before_norm_lenses_are_saved_in_tuned_lens_format(tmp_path):
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="placement='after_norm'.*format='lenssample'"):
        TunedLens(model, placement="after_norm").save(tmp_path / "a", format="tuned-lens")
    with pytest.raises(ValueError, match="apply_final_norm=False"):
        TunedLens(model).with_final_norm(False).save(tmp_path / "b", format="tuned-lens")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tuned_lens_folders_for_other_models_are_refused(tmp_path):
    model = make_tiny_model("llama")
    folder = _random_lens(model).save(tmp_path / "lens", format="tuned-lens")
    with pytest.raises(ValueError, match="num_hidden_layers is 4, this model's is 3"):
        TunedLens.load(folder, make_tiny_model("llama", num_hidden_layers=3))
    with pytest.raises(ValueError, match="d_model is 32, this model's is 48"):
        TunedLens.load(folder, make_tiny_model("llama", hidden_size=48))
    other = make_tiny_model("llama", seed=1)  # same sizes, other weights: told apart by tuned-lens's hash
    with pytest.raises(ValueError, match="unembed_hash"):
        TunedLens.load(folder, other)
    # without a recorded hash (tuned-lens leaves it null in older lenses) only the sizes can be checked
    config = json.loads((folder / "config.json").read_text())
    (folder / "lenssample-manifest.json").unlink()  # as tuned-lens writes it
    (folder / "config.json").write_text(json.dumps({**config, "unembed_hash": None}))
    assert TunedLens.load(folder, other).num_layers == LAYERS


def test_damaged_tuned_lens_folders_give_clear_errors(tmp_path):
    model = make_tiny_model("llama")
    folder = _random_lens(model).save(tmp_path / "lens", format="tuned-lens")
    params, config = folder / "params.pt", json.loads((folder / "config.json").read_text())
    state = torch.load(params, weights_only=True)
    (folder / "lenssample-manifest.json").unlink()  # as tuned-lens writes it: the format's own checks

    bad = dict(state, **{"2.weight": state["2.weight"].clone().fill_(float("nan"))})
    torch.save(bad, params)
    with pytest.raises(ValueError, match="'2.weight' holds NaN or infinite"):
        TunedLens.load(folder, model)
    torch.save(dict(state, **{"1.bias": torch.full((32,), float("inf"))}), params)
    with pytest.raises(ValueError, match="'1.bias' holds NaN or infinite"):
        TunedLens.load(folder, model)
    torch.save({k: v for k, v in state.items() if k != "3.bias"}, params)
    with pytest.raises(ValueError, match=r"missing \['3.bias'\]"):
        TunedLens.load(folder, model)
    torch.save(dict(state, **{"4.weight": state["0.weight"]}), params)
    with pytest.raises(ValueError, match=r"unexpected \['4.weight'\]"):
        TunedLens.load(folder, model)
    torch.save(dict(state, **{"0.weight": torch.zeros(3, 3)}), params)
    with pytest.raises(ValueError, match="shape"):
        TunedLens.load(folder, model)
    params.write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a readable tensor file"):
        TunedLens.load(folder, model)
    params.unlink()
    with pytest.raises(FileNotFoundError, match="params.pt' is missing"):
        TunedLens.load(folder, model)  # a tuned-lens config.json without params.pt is still told apart

    torch.save(state, params)
    (folder / "config.json").write_text(json.dumps({**config, "lens_type": "affine_magic"}))
    with pytest.raises(ValueError, match="lens_type 'affine_magic'"):
        TunedLens.load(folder, model)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TunedLens.load(folder, model)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json' is missing"):
        TunedLens.load(folder, model)

    # a lens without biases (config "bias": false) has zero biases
    torch.save({k: v for k, v in state.items() if k.endswith("weight")}, params)
    (folder / "config.json").write_text(json.dumps({**config, "bias": False}))
    loaded = TunedLens.load(folder, model)
    assert torch.equal(loaded.bias, torch.zeros_like(loaded.bias))
    assert torch.equal(loaded.weight[2], state["2.weight"])


def _hub_copy(tmp_path, model):
    """A tuned-lens folder standing in for one downloaded from the hub."""
    return _random_lens(model).save(
        tmp_path / "hub" / "snapshot" / "lens" / "EleutherAI" / "tiny", format="tuned-lens"
    )


def test_hub_ids_resolve_like_tuned_lens(tmp_path, monkeypatch):
    import huggingface_hub

    model = make_tiny_model("llama")
    served = _hub_copy(tmp_path, model)
    calls = []

    def fake_download(*, repo_id, filename, subfolder, repo_type, local_files_only):
        calls.append((repo_id, repo_type, subfolder, filename, local_files_only))
        return str(served / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(formats, "hub_unreachable_reason", lambda: None)
    monkeypatch.delenv("TUNED_LENS_REPO_ID", raising=False)
    monkeypatch.delenv("TUNED_LENS_REPO_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)  # no local folder named EleutherAI/tiny here
    lens = load_lens("EleutherAI/tiny", model)
    assert torch.equal(lens.weight, TunedLens.load(served, model).weight)
    assert {c[:3] for c in calls} == {("AlignmentResearch/tuned-lens", "space", "lens/EleutherAI/tiny")}
    assert sorted(c[3] for c in calls) == ["config.json", "params.pt"] and not any(c[4] for c in calls)

    calls.clear()
    monkeypatch.setenv("TUNED_LENS_REPO_ID", "me/my-lenses")
    monkeypatch.setenv("TUNED_LENS_REPO_TYPE", "model")
    TunedLens.load("EleutherAI/tiny", model)
    assert {c[:3] for c in calls} == {("me/my-lenses", "model", "lens/EleutherAI/tiny")}

    # a local folder of that name wins, as in tuned-lens
    shutil.copytree(served, tmp_path / "EleutherAI" / "tiny")
    calls.clear()
    TunedLens.load("EleutherAI/tiny", model)
    assert not calls
    # a path that cannot be a hub id is only ever a missing folder
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TunedLens.load(tmp_path / "nowhere", model)
    (tmp_path / "lensfile").write_text("{}")  # nor is a file of a hub-like name
    with pytest.raises(FileNotFoundError, match="is a file"):
        TunedLens.load("lensfile", model)
    assert not calls


def test_hub_ids_offline_fail_at_once_unless_cached(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    model = make_tiny_model("llama")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(
        FileNotFoundError, match="HF_HUB_OFFLINE is set.*not in the hub cache.*local folder"
    ) as err:
        TunedLens.load("EleutherAI/pythia-160m-deduped", model)
    assert (
        "lens/EleutherAI/pythia-160m-deduped/ of the Hugging Face space AlignmentResearch/tuned-lens"
        in str(err.value)
    )
    assert time.monotonic() - start < 2.0

    # no offline flag, but no network: the hub's host is tried once, briefly, not the client's ~20 s of retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(formats.socket, "create_connection", refuse)
    start = time.monotonic()
    with pytest.raises(
        FileNotFoundError, match="cannot be reached.*Network is unreachable.*unset HF_HUB_OFFLINE"
    ):
        load_lens("gpt2", model)
    assert time.monotonic() - start < 2.0

    # offline, a lens in the hub cache is used (the hub client's cache-only lookup)
    served = _hub_copy(tmp_path, model)

    def cached(*, repo_id, filename, subfolder, repo_type, local_files_only):
        assert local_files_only
        return str(served / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cached)
    assert torch.equal(TunedLens.load("gpt2", model).weight, TunedLens.load(served, model).weight)


def test_hub_lens_that_does_not_exist_is_named(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    def missing(**kwargs):
        raise EntryNotFoundError("404")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    monkeypatch.setattr(formats, "hub_unreachable_reason", lambda: None)
    with pytest.raises(FileNotFoundError, match="tuned-lens hub has no lens for it"):
        TunedLens.load("org/no-such-model", make_tiny_model("llama"))


@pytest.mark.real
def test_real_model_cli_reads_a_folder_tuned_lens_saved(
    real_model, tuned_lens, tmp_path, capsys, monkeypatch
):
    model, _ = real_model
    tuned_lens.TunedLens.from_model(model).save(tmp_path / "tl")  # fresh: decodes exactly like the logit lens
    args = ["generate", "The capital of France is", "--max-new-tokens", "4", "--strategy", "layer",
            "--set", "layer=24"]  # fmt: skip
    assert main(args + ["--lens", str(tmp_path / "tl")]) == 0
    through_tuned = capsys.readouterr().out
    assert main(args) == 0
    assert through_tuned == capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--lens", "HuggingFaceTB/SmolLM2-135M-Instruct"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_lens_tuned_is_the_cached_lens_of_a_model_from_load_model(tmp_path, monkeypatch):
    """``lens="tuned"`` (API and ``--lens tuned``) loads the lens ``lenssample train-lens`` cached for the model's
    load name; a model without a cached lens, or not from ``load_model``, is told what to do."""
    from lenssample.lens.tuned import default_lens_path
    from tests.lens.test_tuned_lens import _random_lens

    monkeypatch.setenv("LENSSAMPLE_CACHE", str(tmp_path))
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="lens='tuned' is the cached tuned lens of a model loaded with lenssample"):
        load_lens("tuned", model)
    model.lenssample_name = "tiny-model"
    with pytest.raises(FileNotFoundError, match="no tuned lens is cached for tiny-model .*lenssample train-lens "
                       "--model tiny-model"):  # fmt: skip
        load_lens("tuned", model)
    lens = _random_lens(model)
    lens.save(default_lens_path("tiny-model"))
    assert torch.equal(load_lens("tuned", model).weight, lens.weight)
