"""Golden DoLa outputs from transformers 4.55.4's built-in ``model.generate(dola_layers=...)``.

Transformers 5 moved DoLa out of the library, so this script runs in a *separate* environment with transformers
4.55.4 (the last release that has it built in)::

    python3 -m venv /work/venv-tf455
    # torch 2.13.0 is reused from the project's environment through a .pth file (saves the download):
    echo /work/main/.venv/lib/python3.11/site-packages \
        > /work/venv-tf455/lib/python3.11/site-packages/zz_torch_from_main.pth
    /work/venv-tf455/bin/pip install transformers==4.55.4 safetensors numpy
    /work/venv-tf455/bin/python evals/golden/make_dola_golden.py --out tests/data/dola_golden.json

It loads the default model (SmolLM2-135M-Instruct, fp32) from lenssample's cached folder. That folder's
``config.json`` was written by transformers 5, which stores the RoPE base as ``rope_parameters.rope_theta``;
4.55 reads ``rope_theta`` at the top level (and would silently fall back to 10000), so the script writes an
adjusted copy of the config (plus links to the weights and tokenizer) into a temporary folder and loads that.

The chosen premature layer of each step is recovered without re-implementing the reference: the module-level
``_dola_select_contrast`` is wrapped; after the original returns, it is called again with each candidate alone
(the single-candidate path runs the very same filter-and-subtract), and the candidate whose result is bitwise equal
to the original's is the one it chose.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.generation import utils as generation_utils

MODEL_DIR = Path.home() / ".cache/lenssample/models/smollm2-135m-instruct"
PROMPTS = [
    "The capital of France is",
    "Q: What is the boiling point of water at sea level?\nA:",
]
BATCH_PROMPTS = ["The tallest mountain in the world is", "Photosynthesis is the process by which"]
DOLA_LAYERS: list = ["low", "high", [4, 10, 16, 22]]
REPETITION_PENALTIES = [1.0, 1.2]
NEW_TOKENS = 12


def adjusted_model_dir(tmp: Path) -> Path:
    """A folder 4.55 can read: the config with ``rope_theta`` at the top level, everything else linked."""
    config = json.loads((MODEL_DIR / "config.json").read_text())
    rope = config.pop("rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise SystemExit(f"unexpected rope_parameters {rope}; this script only handles default RoPE")
    config["rope_theta"] = rope.get("rope_theta", 10000.0)
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    for item in MODEL_DIR.iterdir():
        if item.name != "config.json":
            os.symlink(item, tmp / item.name)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="tests/data/dola_golden.json")
    args = parser.parse_args()
    assert transformers.__version__ == "4.55.4", (
        f"needs transformers 4.55.4, found {transformers.__version__}"
    )

    chosen: list[list[int]] = []
    original = generation_utils._dola_select_contrast

    def recording(candidates, candidate_logits, final_logits):
        result = original(candidates, candidate_logits, final_logits)
        matches = [
            layer
            for layer in candidates
            if torch.equal(original([layer], candidate_logits, final_logits.clone()), result)
        ]
        assert matches, "no candidate reproduces the reference's contrast"
        chosen[-1].append(matches[0])
        return result

    generation_utils._dola_select_contrast = recording
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = adjusted_model_dir(Path(tmp))
        # The tokenizer_config.json names a transformers-5 class; the tokenizer.json itself is version-neutral.
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model_pad_id := 2)
        assert tokenizer.pad_token_id == model_pad_id
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
        assert model.config.rope_theta == 100000.0
        for prompts in [[p] for p in PROMPTS] + [BATCH_PROMPTS]:
            tokenizer.padding_side = "left"
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
            for dola_layers in DOLA_LAYERS:
                for penalty in REPETITION_PENALTIES:
                    chosen.append([])
                    with torch.no_grad():
                        sequences = model.generate(
                            **encoded,
                            dola_layers=dola_layers,
                            do_sample=False,
                            max_new_tokens=NEW_TOKENS,
                            repetition_penalty=penalty,
                            pad_token_id=tokenizer.pad_token_id,
                        )
                    cases.append(
                        {
                            "prompts": prompts,
                            "input_ids": encoded["input_ids"].tolist(),
                            "attention_mask": encoded["attention_mask"].tolist(),
                            "dola_layers": dola_layers,
                            "repetition_penalty": penalty,
                            "max_new_tokens": NEW_TOKENS,
                            "new_tokens": sequences[:, encoded["input_ids"].shape[1] :].tolist(),
                            "premature_layers": chosen[-1],
                            "text": tokenizer.batch_decode(sequences[:, encoded["input_ids"].shape[1] :]),
                        }
                    )
                    write(args.out, cases)
                    print(prompts[0][:30], dola_layers, penalty, cases[-1]["text"][0][:60].replace("\n", " "))
    print(f"wrote {len(cases)} cases to {args.out}")


def write(path: str, cases: list) -> None:
    """Write the cases so far (the file is complete after every case)."""
    golden = {
        "reference": f"transformers {transformers.__version__} model.generate(dola_layers=...), torch {torch.__version__}",
        "model": "SmolLM2-135M-Instruct (lenssample's cached folder), float32, CPU",
        "config_adjustment": "rope_parameters.rope_theta moved to top-level rope_theta for transformers 4.55",
        "greedy": True,
        "cases": cases,
    }
    Path(path).write_text(json.dumps(golden, indent=1) + "\n")


if __name__ == "__main__":
    main()
