"""The observations runner: statistics equal direct computation; the runner works end to end on a tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lenssample import apply_lens
from lenssample.analysis.layer_stats import LayerStatistics, frequent_tokens, layer_statistics
from tests.conftest import LAYERS, VOCAB, make_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def _runner():
    spec = importlib.util.spec_from_file_location(
        "observations_run", ROOT / "evals" / "observations" / "run.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_statistics_equal_direct_computation():
    model = make_tiny_model("gpt_neox")
    ids = torch.randint(3, VOCAB, (20,), generator=torch.Generator().manual_seed(0))
    frequent = frequent_tokens([ids], 5)
    stats = layer_statistics(model, ids, frequent=frequent, max_chunk_bytes=1)  # chunk of one position
    lp = apply_lens(model, ids[None]).log_probs()[0, :-1]  # [pos, layers, vocab]
    p_final = lp[:, -1:].exp()
    kl = (p_final * (lp[:, -1:] - lp)).sum(-1)
    top1 = lp.argmax(-1)
    targets, inputs = ids[1:], ids[:-1]
    torch.testing.assert_close(
        torch.from_numpy(stats.values["kl"]).float(), kl.clamp_min(0), rtol=1e-4, atol=1e-4
    )
    assert (stats.values["agree_final"] == (top1 == top1[:, -1:]).numpy()).all()
    assert (stats.values["next_top1"] == (top1 == targets[:, None]).numpy()).all()
    assert (stats.values["input_top1"] == (top1 == inputs[:, None]).numpy()).all()
    for pos in [0, 7, 18]:
        for layer in [0, 2, LAYERS]:
            rank = int((lp[pos, layer] > lp[pos, layer, targets[pos]]).sum())
            assert stats.values["next_rank"][pos, layer] == rank
            assert stats.values["input_rank"][pos, layer] == int(
                (lp[pos, layer] > lp[pos, layer, inputs[pos]]).sum()
            )
            assert stats.values["frequent"][pos, layer] == float(int(top1[pos, layer]) in frequent.tolist())
    torch.testing.assert_close(
        torch.from_numpy(stats.values["next_nll"]).float(),
        -lp.gather(-1, targets[:, None, None].expand(-1, LAYERS + 1, 1))[..., 0],
    )
    assert stats.values["agree_final"][:, -1].all()  # the final layer agrees with itself
    assert stats.first_layer_reaching("agree_final", 1.0) == LAYERS


def test_frequent_tokens_and_concatenate_errors():
    ids = torch.tensor([5, 5, 5, 7, 7, 9])
    assert frequent_tokens([ids], 2).tolist() == [5, 7]
    with pytest.raises(ValueError, match="at least one text"):
        LayerStatistics.concatenate([])
    with pytest.raises(ValueError, match="seq >= 2"):
        layer_statistics(make_tiny_model("llama"), torch.tensor([4]))


class CharTokenizer:
    """A stand-in tokenizer for tiny models: one id per character."""

    def __call__(self, text, return_tensors=None):
        ids = torch.tensor([[3 + ord(c) % (VOCAB - 3) for c in text]])

        class Encoded:
            input_ids = ids

        return Encoded()

    def decode(self, ids, **kwargs):
        return "".join(chr(96 + int(i) % 26) for i in ids)


def test_runner_end_to_end_on_tiny_model(tmp_path):
    run = _runner()
    config = {"n_tokens": 300, "window": 100, "n_frequent": 10, "models": [{"name": "tiny"}]}
    model = make_tiny_model("llama")
    results = run.run(config, tmp_path, model_override=(model, CharTokenizer()))
    saved = json.loads((tmp_path / "results.json").read_text())
    summary = saved["models"]["tiny"]["lenses"]["logit"]
    assert summary["n_positions"] >= 300 and summary["layers"] == list(range(LAYERS + 1))
    assert summary["agree_final"][-1] == 1.0
    verdicts = results["models"]["tiny"]["verdicts"]["logit"]
    assert {v["verdict"] for v in verdicts.values()} <= {"holds", "holds partly", "does not hold"}
    report = (tmp_path / "report.md").read_text()
    assert "Observation 1" in report and "| 0 |" in report
    assert (tmp_path / "curves_tiny.png").stat().st_size > 10_000
    assert (tmp_path / "heatmap_tiny_logit.png").stat().st_size > 10_000
    assert "heatmap_tiny_logit.png" in report


def test_runner_reports_a_tuned_lens_and_how_it_was_made(tmp_path):
    from lenssample.lens.tuned import TunedLens

    run = _runner()
    model = make_tiny_model("llama")
    lens = TunedLens(model, placement="after_norm")
    with torch.no_grad():
        lens.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    lens.training_info = {"steps": 7, "train_tokens": 123, "lr": 0.001}
    folder = lens.save(tmp_path / "lens")
    config = {
        "n_tokens": 200,
        "window": 100,
        "n_frequent": 10,
        "models": [{"name": "tiny", "tuned_lens": str(folder)}],
    }
    results = run.run(config, tmp_path / "out", model_override=(model, CharTokenizer()))
    per_lens = results["models"]["tiny"]
    assert set(per_lens["lenses"]) == {"logit", "tuned"}
    assert per_lens["tuned_lens"] == {"placement": "after_norm", "steps": 7, "train_tokens": 123, "lr": 0.001}
    # the tuned lens's statistics are its own (a random translator changes every layer below L)
    assert per_lens["lenses"]["tuned"]["kl"][1] != per_lens["lenses"]["logit"]["kl"][1]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Observation 4 (tuned lens)" in report and "placement after_norm, steps 7" in report
    assert "`lenssample train-lens --model tiny --data wikipedia --steps 7`" in report
