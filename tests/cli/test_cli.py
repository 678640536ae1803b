"""The CLI through main([...]): exit 2 with a one-line message on bad input, JSON output on the real model."""

from __future__ import annotations

import json

import pytest

from lenssample.cli import main


def test_unknown_strategy_exits_2(capsys):
    assert main(["generate", "hello", "--strategy", "finall"]) == 2
    err = capsys.readouterr().err
    assert "strategy='finall' is not known" in err and "Did you mean 'final'" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_values_exit_2(capsys):
    assert main(["generate", "hello", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens 0" in capsys.readouterr().err
    assert main(["generate", "hello", "--set", "alpha"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["generate", "hello", "--strategy", "layer", "--set", "layr=3"]) == 2
    assert "Did you mean 'layer'" in capsys.readouterr().err
    assert main(["generate", "hello", "--max-new-tokens", "many"]) == 2  # argparse's own check
    assert main(["nonsense"]) == 2


def test_missing_model_file_exits_2(capsys, tmp_path):
    assert main(["generate", "hello", "--model", str(tmp_path / "nope.gguf")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err


@pytest.mark.real
def test_generate_json_on_default_model(real_model, capsys):
    assert main(["generate", "The capital of France is", "--max-new-tokens", "4", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["strategy"] == {"name": "final"} and len(record["tokens"]) == 4
    assert record["trace"]["layers"] == [30]


@pytest.mark.real
def test_generate_with_layer_strategy_and_sampling(real_model, capsys):
    args = ["generate", "Hello", "--strategy", "layer", "--set", "layer=-3", "--max-new-tokens", "3", "--sample",
            "--temperature", "0.7", "--seed", "1", "--json"]  # fmt: skip
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == first["tokens"]
    assert first["trace"]["layers"] == [28]


def test_lens_reads_a_text_longer_than_the_model_in_windows(fake_gguf, capsys):
    """The tiny model reads 128 positions: a longer text is refused with the fix, and read with --window."""
    text = " ".join(["hello world"] * 100)
    command = ["lens", text, "--model", str(fake_gguf), "--last", "2"]
    assert main(command) == 2
    assert "read it in windows of at most 128 tokens" in capsys.readouterr().err
    assert main([*command, "--window", "64"]) == 0
    assert "layer" in capsys.readouterr().out
    assert main([*command, "--window", "1"]) == 2
    assert "--window 1: must be >= 2" in capsys.readouterr().err
