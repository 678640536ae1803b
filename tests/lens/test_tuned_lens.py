"""Tuned lens: identity at start, batched translation, exact storage, refusal of other models, training, resume."""

from __future__ import annotations

import json

import pytest
import torch

from lenssample.analysis.lens_eval import compare_lenses, spread_windows
from lenssample.api import generate
from lenssample.cli import main
from lenssample.lens.apply import apply_lens
from lenssample.lens.base import LogitLens
from lenssample.lens.checkpoints import closed_form_lens
from lenssample.lens.train import train_tuned_lens
from lenssample.lens.tuned import TunedLens, default_lens_path, model_identity
from lenssample.model.capture import run_layers
from lenssample.strategies.base import SingleLayer
from tests.conftest import LAYERS, VOCAB, make_tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one thread is fastest, and on a loaded machine extra threads only spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ids(seed: int, n: int = 12, batch: int = 2) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def _random_lens(model, seed: int = 0, placement: str = "before_norm") -> TunedLens:
    lens = TunedLens(model, placement=placement)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.weight.copy_(0.1 * torch.randn(lens.weight.shape, generator=gen))
        lens.bias.copy_(0.1 * torch.randn(lens.bias.shape, generator=gen))
    return lens


def _texts(seed: int, docs: int = 6, length: int = 200) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (length,), generator=gen) for _ in range(docs)]


@pytest.mark.parametrize("placement", ["before_norm", "after_norm"])
def test_fresh_tuned_lens_equals_logit_lens_exactly(tiny_model, placement):
    layers = list(range(LAYERS + 1))
    hidden = run_layers(tiny_model, _ids(0), layers, use_cache=False, keep=None).hidden
    tuned = TunedLens(tiny_model, placement=placement)
    assert torch.equal(tuned(hidden, layers), LogitLens(tiny_model)(hidden, layers))
    assert sum(p.numel() for p in tuned.parameters()) == LAYERS * (tuned.d_model**2 + tuned.d_model)


def test_fresh_tuned_lens_decodes_like_logit_lens():
    model = make_tiny_model("llama")
    ids = _ids(1, batch=1)
    strategy = SingleLayer(layer=2)
    a = generate(model, ids, strategy=strategy, max_new_tokens=6, lens=TunedLens(model))
    b = generate(model, ids, strategy=strategy, max_new_tokens=6)
    assert torch.equal(a.sequences, b.sequences)


def test_translate_is_the_per_layer_affine_map_in_any_layer_order():
    model = make_tiny_model("gpt2")
    lens = _random_lens(model)
    layers = [3, 0, LAYERS, 2]
    hidden = torch.randn(2, 5, len(layers), lens.d_model)
    out = lens.translate(hidden, layers)
    for i, layer in enumerate(layers):
        h = hidden[..., i, :]
        expected = h if layer == LAYERS else h + h @ lens.weight[layer].T + lens.bias[layer]
        torch.testing.assert_close(out[..., i, :], expected)
    # the final layer is untouched: the tuned lens at L is the model's logits
    logits = apply_lens(model, _ids(2), layers=[LAYERS], lens=lens).logits[:, :, 0]
    torch.testing.assert_close(logits, model(_ids(2)).logits)
    with pytest.raises(ValueError, match="layer slices"):
        lens.translate(hidden, layers[:2])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_after_norm_lens_translates_the_final_normed_state(arch):
    model = make_tiny_model(arch)
    lens = _random_lens(model, placement="after_norm")
    before = _random_lens(model, placement="before_norm")  # same weights, other placement
    layers = [1, LAYERS, 0]
    hidden = run_layers(model, _ids(3), layers, use_cache=False, keep=None).hidden
    parts = lens.parts
    normed = parts.final_norm(hidden)
    logits = lens(hidden, layers)
    for i, layer in enumerate(layers):
        x = normed[..., i, :]
        translated = x if layer == LAYERS else x + x @ lens.weight[layer].T + lens.bias[layer]
        expected = parts.unembed(translated)
        if parts.logits_transform is not None:
            expected = parts.logits_transform(expected)
        torch.testing.assert_close(logits[..., i, :], expected.float(), rtol=1e-4, atol=1e-4)
    # at L both placements are the model's own logits; below L they differ
    assert torch.equal(logits[..., 1, :], before(hidden, layers)[..., 1, :])
    assert not torch.allclose(logits[..., 0, :], before(hidden, layers)[..., 0, :])
    torch.testing.assert_close(logits[..., 1, :], model(_ids(3)).logits)


def test_after_norm_lens_refuses_to_skip_the_final_norm():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="apply_final_norm must be True"):
        TunedLens(model, placement="after_norm", apply_final_norm=False)
    with pytest.raises(ValueError, match="cannot be used with apply_final_norm=False"):
        TunedLens(model, placement="after_norm").with_final_norm(False)
    with pytest.raises(ValueError, match="placement='middle'"):
        TunedLens(model, placement="middle")
    with pytest.raises(ValueError, match="placement='middle'"):
        train_tuned_lens(model, _texts(0), placement="middle", progress=False)
    # the paper's placement may skip the norm (transformers-parity strategies)
    assert TunedLens(model).with_final_norm(False).apply_final_norm is False
    # ... and a transformers-parity strategy through an after-norm lens is refused before decoding
    from lenssample.strategies.dola import DoLaReference

    parity = DoLaReference.for_model(model, layers=[0, 2])
    with pytest.raises(ValueError, match="cannot be used with apply_final_norm=False"):
        generate(model, _ids(4, batch=1), strategy=parity, lens=TunedLens(model, placement="after_norm"))


@pytest.mark.parametrize("placement", ["before_norm", "after_norm"])
def test_save_load_keeps_the_placement(tmp_path, placement):
    model = make_tiny_model("llama")
    lens = _random_lens(model, placement=placement)
    folder = lens.save(tmp_path / "lens")
    loaded = TunedLens.load(folder, model)
    assert loaded.placement == placement
    hidden = torch.randn(3, LAYERS + 1, lens.d_model)
    assert torch.equal(loaded(hidden, range(LAYERS + 1)), lens(hidden, range(LAYERS + 1)))
    config = json.loads((folder / "config.json").read_text())
    assert config["placement"] == placement
    (folder / "lenssample-manifest.json").unlink()  # edited below: read as a lens saved before manifests
    del config["placement"]  # a lens saved before placements existed is a before-norm lens
    (folder / "config.json").write_text(json.dumps(config))
    assert TunedLens.load(folder, model).placement == "before_norm"
    config["placement"] = "sideways"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="placement 'sideways'"):
        TunedLens.load(folder, model)


def test_save_load_round_trip_is_exact(tmp_path):
    model = make_tiny_model("qwen2")
    lens = _random_lens(model)
    lens.training_info = {"steps": 3, "note": "x"}
    folder = lens.save(tmp_path / "lens")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "lenssample-manifest.json", "model.safetensors"]  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == model_identity(model)
    loaded = TunedLens.load(folder, model)
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    assert loaded.training_info == lens.training_info
    hidden = torch.randn(3, LAYERS + 1, lens.d_model)
    assert torch.equal(loaded(hidden, range(LAYERS + 1)), lens(hidden, range(LAYERS + 1)))
    # saving again over a lens folder replaces it; nothing else is left next to it
    lens.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]


def test_loading_onto_another_model_is_refused(tmp_path):
    folder = _random_lens(make_tiny_model("llama", seed=0)).save(tmp_path / "lens")
    with pytest.raises(ValueError, match="unembed_sha256"):
        TunedLens.load(folder, make_tiny_model("llama", seed=1))  # same shapes, other weights
    with pytest.raises(ValueError, match="trained for another model"):
        TunedLens.load(folder, make_tiny_model("gpt2"))


def test_corrupt_lens_folders_give_clear_errors(tmp_path):
    model = make_tiny_model("llama")
    folder = _random_lens(model).save(tmp_path / "lens")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TunedLens.load(tmp_path / "nowhere", model)
    from safetensors.torch import save_file

    (folder / "lenssample-manifest.json").unlink()  # the checks a lens saved before manifests still gets

    good = (folder / "model.safetensors").read_bytes()
    save_file(
        {"weight": torch.zeros(LAYERS, 3, 3), "bias": torch.zeros(LAYERS, 32)},
        str(folder / "model.safetensors"),
    )
    with pytest.raises(ValueError, match="shape"):
        TunedLens.load(folder, model)
    save_file({"weight": torch.zeros(LAYERS, 32, 32)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="no tensor 'bias'"):
        TunedLens.load(folder, model)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        TunedLens.load(folder, model)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        TunedLens.load(folder, model)
    (folder / "model.safetensors").write_bytes(good)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TunedLens.load(folder, model)
    (folder / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a lenssample tuned-lens config"):
        TunedLens.load(folder, model)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        TunedLens.load(folder, model)


def test_failed_save_leaves_nothing_half_written(tmp_path, monkeypatch):
    import lenssample.lens.tuned as tuned_module

    model = make_tiny_model("llama")
    first = _random_lens(model, seed=0)
    folder = first.save(tmp_path / "lens")

    def _boom(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tuned_module, "save_file", _boom)
    with pytest.raises(OSError, match="disk full"):
        _random_lens(model, seed=1).save(tmp_path / "fresh")
    with pytest.raises(OSError, match="disk full"):
        _random_lens(model, seed=1).save(folder)
    # no temporary folder left, no half-written "fresh", the old lens intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]
    assert torch.equal(TunedLens.load(folder, model).weight, first.weight)
    monkeypatch.undo()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a tuned-lens folder"):
        first.save(tmp_path / "other")


@pytest.mark.parametrize("placement", ["after_norm", "before_norm"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_lowers_heldout_kl_at_every_layer(arch, placement):
    model = make_tiny_model(arch)
    lens = train_tuned_lens(
        model,
        _texts(0),
        placement=placement,
        steps=20,
        lr=3e-3,
        seq_len=32,
        batch_positions=32,
        cache_positions=512,
        progress=False,
    )
    assert all(p.requires_grad for p in model.parameters())  # the model is handed back as it was
    # evaluated on fresh text the training never saw
    heldout = [w for t in _texts(99, docs=3) for w in t.split(32)]
    result = compare_lenses(model, {"logit": LogitLens(model), "tuned": lens}, heldout, max_positions=256)
    logit_kl, tuned_kl = result.metrics["logit"]["kl"], result.metrics["tuned"]["kl"]
    assert all(t < 0.8 * g for t, g in zip(tuned_kl[:LAYERS], logit_kl[:LAYERS])), (logit_kl, tuned_kl)
    assert tuned_kl[LAYERS] == pytest.approx(0.0, abs=1e-6) and logit_kl[LAYERS] == pytest.approx(
        0.0, abs=1e-6
    )
    info = lens.training_info
    assert all(t <= c for t, c in zip(info["heldout_kl_tuned"], info["heldout_kl_closed_form"]))


def test_training_kl_equals_the_plain_formula_and_its_gradient():
    # The training loss skips log_softmax; its value and gradient must be those of the textbook KL, including
    # vocabulary entries the final layer gives probability exactly 0 (log p = -inf).
    from lenssample.lens.train import _KLFromLogits

    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(4, 3, 11, generator=gen, dtype=torch.float64)).requires_grad_()
    final = 3 * torch.randn(4, 11, generator=gen, dtype=torch.float64)
    final[0, :4] = float("-inf")
    log_p = torch.log_softmax(final, -1)
    weights = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    fused = _KLFromLogits.apply(logits, log_p)
    (fused * weights).sum().backward()
    grad_fused = logits.grad.clone()
    logits.grad = None
    p = log_p.exp()[:, None]
    plain = torch.where(p > 0, p * (log_p[:, None] - torch.log_softmax(logits, -1)), 0.0).sum(-1)
    (plain * weights).sum().backward()
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_fused, logits.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x: _KLFromLogits.apply(x, log_p), (logits.detach().requires_grad_(),)
    )


def test_spread_windows_covers_every_part_of_the_list():
    # 40 windows of 10 tokens (9 predicting positions each), as if cut in order from 4 documents of 10 windows
    windows = [torch.full((10,), i) for i in range(40)]
    picked = spread_windows(windows, 45)
    ids = [int(w[0]) for w in picked]
    assert sum(w.numel() - 1 for w in picked) >= 45
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    assert {i // 10 for i in ids} == {0, 1, 2, 3}  # every document, not only the first
    assert spread_windows(windows, 10_000) == windows  # all of them when they hold fewer positions
    assert [int(w[0]) for w in spread_windows(windows, 1)] == [0]


def test_compare_lenses_uses_the_spread_windows():
    model = make_tiny_model("llama")
    lenses = {"logit": LogitLens(model)}
    windows = [w for t in _texts(5, docs=4, length=64) for w in t.split(16)]  # 16 windows, 15 positions each
    spread = compare_lenses(model, lenses, windows, max_positions=60)
    by_hand = compare_lenses(model, lenses, spread_windows(windows, 60), max_positions=60)
    first = compare_lenses(model, lenses, windows[:4], max_positions=60)
    assert spread.positions == by_hand.positions == 60
    assert spread.metrics == by_hand.metrics
    assert spread.metrics != first.metrics


def test_comparison_table_has_the_fraction_of_the_logit_lens_kl():
    from lenssample.analysis.lens_eval import LensComparison

    per = lambda kl: {"kl": kl, "agreement": [0.5, 1.0], "cross_entropy": [3.0, 2.0], "entropy": [1.0, 1.0]}  # noqa: E731
    table = LensComparison(
        layers=[0, 1], positions=4, metrics={"logit": per([8.0, 0.0]), "tuned": per([1.0, 0.0])}
    )
    lines = table.markdown().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:4] == ["layer", "logit kl", "tuned kl", "tuned kl / logit"]
    assert [c.strip() for c in lines[2].strip("|").split("|")][:4] == ["0", "8.00", "1.00", "0.125"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][3] == "-"  # last layer: both 0, no ratio
    assert "/" not in table.markdown(baseline=None).splitlines()[0]


def test_interrupted_training_resumes_to_the_same_lens(tmp_path):
    model = make_tiny_model("llama")
    kwargs = dict(steps=6, lr=3e-3, seq_len=32, batch_positions=8, cache_positions=256, checkpoint_every=2)
    reference = train_tuned_lens(model, _texts(0), checkpoint_dir=tmp_path / "a", progress=False, **kwargs)

    class Interrupted(Exception):
        pass

    def _interrupt(step: int, _loss: float) -> None:
        if step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_tuned_lens(
            model, _texts(0), checkpoint_dir=tmp_path / "b", progress=False, on_step=_interrupt, **kwargs
        )
    steps_run = []
    resumed = train_tuned_lens(
        model,
        _texts(0),
        checkpoint_dir=tmp_path / "b",
        progress=False,
        on_step=lambda step, _loss: steps_run.append(step),
        **kwargs,
    )
    assert steps_run == [5, 6]  # continued from the checkpoint at step 4
    assert torch.equal(resumed.weight, reference.weight) and torch.equal(resumed.bias, reference.bias)
    start = closed_form_lens(tmp_path / "a", model)  # the ridge start, read back without a model pass
    assert start.weight.abs().sum() > 0 and not torch.equal(start.weight, reference.weight)
    assert start.placement == reference.placement == "after_norm"
    # a checkpoint of other settings is not silently reused
    with pytest.raises(ValueError, match="other settings"):
        train_tuned_lens(
            model, _texts(0), checkpoint_dir=tmp_path / "b", progress=False, **{**kwargs, "lr": 1e-3}
        )


def test_bad_training_input_is_refused():
    model = make_tiny_model("llama")
    with pytest.raises(ValueError, match="at least 2"):
        train_tuned_lens(model, [], progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        train_tuned_lens(model, [torch.arange(3, 10)], seq_len=32, progress=False)
    with pytest.raises(ValueError, match="tokenizer is required"):
        train_tuned_lens(model, ["some text"], progress=False)
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        train_tuned_lens(model, "some text", progress=False)
    with pytest.raises(ValueError, match="steps=-1"):
        train_tuned_lens(model, _texts(0), steps=-1, progress=False)


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["train-lens", "--data", str(tmp_path / "missing.txt")]) == 2
    assert main(["lens-eval", "--lens", str(tmp_path), "--data", "gutenberg"]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "'gutenberg': not a packaged corpus (books, wikipedia, mixed)" in err
    assert main(["train-lens", "--steps", "-1"]) == 2
    assert main(["lens-eval", "--lens", "x", "--compare", "nodir"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_default_lens_path_is_per_model(monkeypatch, tmp_path):
    monkeypatch.setenv("LENSSAMPLE_CACHE", str(tmp_path))
    assert default_lens_path(None).parent == default_lens_path("org/other-model").parent
    assert default_lens_path(None) != default_lens_path("org/other-model")
    assert str(default_lens_path(None)).startswith(str(tmp_path))


@pytest.mark.real
def test_real_model_fresh_tuned_lens_equals_logit_lens(real_model):
    model, tokenizer = real_model
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    layers = [0, 12, 24, 30]
    a = apply_lens(model, ids, layers=layers, lens=TunedLens(model)).logits
    b = apply_lens(model, ids, layers=layers).logits
    assert torch.equal(a, b)


@pytest.mark.real
def test_real_model_cli_generate_and_lens_eval_through_a_saved_lens(real_model, tmp_path, capsys):
    model, _ = real_model
    folder = TunedLens(model).save(tmp_path / "lens")  # fresh: must decode exactly like the logit lens
    args = [
        "generate",
        "The capital of France is",
        "--max-new-tokens",
        "4",
        "--strategy",
        "layer",
        "--set",
        "layer=24",
    ]
    assert main(args + ["--lens", str(folder)]) == 0
    through_tuned = capsys.readouterr().out
    assert main(args) == 0
    assert through_tuned == capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert (
        main(["lens-eval", "--lens", str(folder), "--positions", "6", "--seq-len", "16", "--out", str(out)])
        == 0
    )
    result = json.loads(out.read_text())
    assert result["positions"] == 6 and out.with_suffix(".png").is_file()
    assert out.with_suffix(".md").read_text().startswith("| layer | logit kl | tuned kl |")
    assert result["metrics"]["tuned"]["kl"] == result["metrics"]["logit"]["kl"]
    assert main(["generate", "Hi", "--lens", str(tmp_path / "missing")]) == 2


def test_a_checkpoint_folder_in_use_by_another_run_is_refused(tmp_path):
    from filelock import FileLock

    model = make_tiny_model("llama")
    kwargs = dict(steps=2, seq_len=32, batch_positions=8, cache_positions=256, progress=False)
    (tmp_path / "run").mkdir()
    with FileLock(tmp_path / "run" / ".lock"):  # another run holds it
        with pytest.raises(RuntimeError, match=r"checkpoint_dir=.*run' is in use by another training run"):
            train_tuned_lens(model, _texts(0), checkpoint_dir=tmp_path / "run", **kwargs)
    train_tuned_lens(model, _texts(0), checkpoint_dir=tmp_path / "run", **kwargs)  # free again: runs
    train_tuned_lens(model, _texts(0), checkpoint_dir=tmp_path / "run", **kwargs)  # released after a run too


def test_ridge_fit_of_a_default_model_sized_system_is_exact_with_two_threads():
    """The closed-form fit solves 31 systems of 577 x 577 (the default model's size). MKL's threaded batched LU
    returned zero pivots for such a batch on an AMD EPYC (training then failed); the Cholesky solve is exact."""
    from lenssample.lens.fit import Collected, solve_ridge

    gen = torch.Generator().manual_seed(0)
    layers, d = 31, 576
    features = torch.cat([torch.randn(layers, 800, d, generator=gen), torch.ones(layers, 800, 1)], -1).double()
    targets = torch.randn(layers, 800, d, generator=gen).double()
    gram, cross = features.transpose(1, 2) @ features, features.transpose(1, 2) @ targets
    collected = Collected(gram=gram, cross=cross, heldout_gram=gram, heldout_cross=cross,
                          heldout_target_sq=targets.pow(2).sum((1, 2)), train_hidden=None, heldout_hidden=None,
                          tokens=800)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weight, bias, chosen = solve_ridge(collected, grid=(1e-3,))
    finally:
        torch.set_num_threads(threads)
    penalty = torch.ones(d + 1, dtype=torch.float64)
    penalty[d] = 0.0
    scale = torch.diagonal(gram[:, :d, :d], dim1=1, dim2=2).mean(-1)
    for layer in (0, 17, 30):  # one system at a time, as a reference
        theta = torch.linalg.solve(gram[layer] + 1e-3 * scale[layer] * torch.diag(penalty), cross[layer])
        torch.testing.assert_close(weight[layer], theta[:d].T.float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bias[layer], theta[d].float(), rtol=1e-4, atol=1e-5)
    assert chosen == [1e-3] * layers


def test_ridge_fit_of_a_layer_whose_residual_stream_never_varies_is_its_bias():
    """Fresh probe: text that tokenized to one id with a zero embedding (a tiny model, a foreign tokenizer) left
    every feature 0; the unpenalised system was singular and `train-lens` ended in a LinAlgError. The fit of such a
    layer is now W = 0 and the bias the mean target."""
    from lenssample.lens.fit import Collected, solve_ridge

    layers, d, n = 2, 8, 50
    features = torch.cat([torch.zeros(layers, n, d), torch.ones(layers, n, 1)], -1).double()
    targets = torch.randn(layers, n, d, generator=torch.Generator().manual_seed(0)).double()
    gram, cross = features.transpose(1, 2) @ features, features.transpose(1, 2) @ targets
    collected = Collected(gram=gram, cross=cross, heldout_gram=gram, heldout_cross=cross,
                          heldout_target_sq=targets.pow(2).sum((1, 2)), train_hidden=None, heldout_hidden=None,
                          tokens=n)  # fmt: skip
    weight, bias, _ = solve_ridge(collected)
    assert weight.isfinite().all() and bias.isfinite().all()
    torch.testing.assert_close(weight, torch.zeros_like(weight), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias, targets.mean(1).float(), atol=1e-5, rtol=1e-5)
