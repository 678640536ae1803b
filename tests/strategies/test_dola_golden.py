"""DoLa parity mode against golden outputs of transformers 4.55.4's ``model.generate(dola_layers=...)`` on the
default model (token ids and the premature layer chosen at every step; see tests/data/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lenssample import DoLaReference, generate

GOLDEN = json.loads((Path(__file__).parents[1] / "data" / "dola_golden.json").read_text())
CASES = GOLDEN["cases"]


def _case_id(case: dict) -> str:
    layers = case["dola_layers"] if isinstance(case["dola_layers"], str) else "list"
    return f"{case['prompts'][0][:12]}-b{len(case['prompts'])}-{layers}-rp{case['repetition_penalty']}"


def test_golden_file_covers_the_required_settings():
    assert {json.dumps(c["dola_layers"]) for c in CASES} >= {'"low"', '"high"'}
    assert any(isinstance(c["dola_layers"], list) for c in CASES)
    assert {c["repetition_penalty"] for c in CASES} == {1.0, 1.2}
    assert all(len(c["premature_layers"]) == len(c["new_tokens"][0]) for c in CASES)


@pytest.mark.real
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_reference_mode_reproduces_transformers_4_55(real_model, case):
    model, _ = real_model
    strategy = DoLaReference.for_model(model, layers=case["dola_layers"])
    out = generate(
        model,
        torch.tensor(case["input_ids"]),
        attention_mask=torch.tensor(case["attention_mask"]),
        strategy=strategy,
        max_new_tokens=case["max_new_tokens"],
        repetition_penalty=case["repetition_penalty"] if case["repetition_penalty"] != 1.0 else None,
    )
    assert out.new_tokens.tolist() == case["new_tokens"]
    # One layer per step for the whole batch, as in the reference.
    assert out.trace.info["premature_layer"][0].tolist() == case["premature_layers"]
