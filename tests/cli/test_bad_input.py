"""Hostile input through main([...]): exit 2 and one line on stderr naming the flag, the value and the fix, before any
model loads or any output is lost; Ctrl-C exits 130 with how to resume; warnings are one line; --debug re-raises."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from lenssample.cli import main

SPEED_CONFIG = 'variants = ["final"]\n[[tasks]]\nkind = "speed"\n'

# argv ({tmp}: a folder, {file}: a file in it) -> a fragment of the one-line message
BAD = [
    ("generate hi --device cuda:99", "--device='cuda:99' is not available"),
    ("generate hi --device nonsense", "--device='nonsense' is not a torch device. Use e.g. cpu"),
    ("generate hi --threads -1", "--threads -1: must be >= 1"),
    ("generate hi --strategy dola --sample --temperature 1e-45", "--temperature 1e-45 is outside"),
    ("generate hi --strategy dola --sample --temperature inf", "--temperature inf is outside"),
    ("generate hi --strategy dola --temperature nan", "--temperature nan must be a number"),
    ("generate hi --top-p 2", "--top-p 2.0 is outside (0.0, 1.0]"),
    ("generate hi --lens-dtype fp8", "invalid choice: 'fp8'"),  # argparse's own errors are one line too
    ("generate", "the following arguments are required: prompt"),
    ("nonsense", "invalid choice: 'nonsense'"),
    ("trace hi --out {file}/x.png", "'{file}' is a file, not a folder"),
    ("trace hi --out {tmp}/x.txt", "has extension '.txt'; use one of .png"),
    ("lens hi --out {tmp}/missing/x.html", "folder '{tmp}/missing' does not exist; create it first"),
    ("bench --prompt=", "--prompt is empty; pass some text"),
    ("bench --out {tmp}", "--out '{tmp}' is a folder; pass a file name inside it"),
    ("bench --out {tmp}/x.csv", "--out '{tmp}/x.csv' has extension '.csv'; use one of .json"),
    ("bench --out {file}/x.json --device cpu", "is a file, not a folder"),
    ("lens-eval --lens {tmp} --out {file}/r.json", "is a file, not a folder"),
    ("lens-eval --lens {tmp} --out {tmp}/r.json --plot {tmp}/r.txt", "--plot '{tmp}/r.txt' has extension"),
    ("lens-eval --lens {tmp} --out {tmp}/r.json --seq-len 4", "--seq-len 4: must be >= 8"),
    ("train-lens --out {file}", "--out '{file}' is a file, not a folder"),
    ("train-lens --out {tmp}/lens --checkpoint-dir {file}/c", "--checkpoint-dir '{file}/c': '{file}' is a file"),
    ("train-lens --out {tmp}/lens --save-closed-form {file}", "--save-closed-form '{file}' is a file"),
    ("eval {tmp}/sweep.toml --out {file}", "results folder (the config's out, or --out) '{file}' is a file"),
    ("eval {tmp}", "is a folder; pass the .toml file in it"),
    ("export-decoder {file}/decoder", "directory '{file}/decoder': '{file}' is a file, not a folder"),
    # fresh probe: a parameter given twice with --set (refused in a spec too); thousands of threads end the process
    ("generate hi --strategy dola --set alpha=0.1 --set alpha=0.2", "--set 'alpha=0.2': 'alpha' is set twice"),
    ("generate hi --threads 100000", "--threads=100000 must be an integer in 1.."),
    ("lens hi --layers 1,,2", "--layers '1,,2': pass comma-separated layer numbers"),
    ("eval {tmp}/unknown-model.toml --out {tmp}/out", "models entry 'no-such-model-xyz': not an embedded model"),
    # an option the command does not take: named by the command (its --help), with the closest one it takes
    ("generate hi --temprature 0.5", "lenssample generate: error: unrecognized arguments: --temprature 0.5; did you "
     "mean --temperature? (see lenssample generate --help)"),
    ("bench --bogus", "lenssample bench: error: unrecognized arguments: --bogus (see lenssample bench --help)"),
    ("lens hi --layers -1,5", "expected one argument; write a value that starts with '-' as --flag=VALUE"),
    ("bench final dola final", "SPEC 'final' is given twice; give each variant once"),
]  # fmt: skip


@pytest.fixture
def place(tmp_path):
    (tmp_path / "sweep.toml").write_text(SPEED_CONFIG)
    (tmp_path / "unknown-model.toml").write_text('models = ["no-such-model-xyz"]\n' + SPEED_CONFIG)
    (tmp_path / "file").write_text("")
    return lambda text: text.format(tmp=tmp_path, file=tmp_path / "file")


@pytest.mark.parametrize("argv, fragment", BAD, ids=[argv for argv, _ in BAD])
def test_bad_input_exits_2_with_one_line(argv, fragment, place, capsys, monkeypatch):
    monkeypatch.setattr("lenssample.model.loading.load_model", pytest.fail)  # every case fails before loading
    assert main(place(argv).split()) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and place(fragment) in err, err


@pytest.mark.real
@pytest.mark.parametrize("flag", ["--pad-token-id", "--eos-token-id"])
def test_a_token_id_outside_the_models_vocabulary_is_named_by_its_flag(flag, capsys, real_model):
    """Checked once the model is loaded (the vocabulary comes with it), still named as the user wrote it."""
    assert main(["generate", "hi", "--max-new-tokens", "2", flag, "99999999"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{flag} 99999999 must be an integer in 0..49151" in err, err


# argv, what raises KeyboardInterrupt, the hint the one line gives
INTERRUPTED = [
    ("eval {tmp}/sweep.toml --out {tmp}/out", "lenssample.eval.distributed.run_distributed",
     "every finished item is kept in {tmp}/out; rerun `lenssample eval {tmp}/sweep.toml --out {tmp}/out` to resume"),
    ("train-lens --out {tmp}/lens --data {tmp}/sweep.toml", "lenssample.cli.train_lens.load",
     "checkpoints are in {tmp}/lens.checkpoints; rerun the command (without --no-resume) to resume"),
    ("bench", "lenssample.cli.bench.load", "nothing was written; rerun to time again (each run starts over)"),
]  # fmt: skip


@pytest.mark.parametrize("argv, target, hint", INTERRUPTED, ids=["eval", "train-lens", "bench"])
def test_ctrl_c_exits_130_saying_how_to_resume(argv, target, hint, place, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupt)
    assert main(place(argv).split()) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"lenssample {argv.split()[0]}: interrupted; {place(hint)}"]


def test_warnings_are_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def warn_then_fail(args):
        warnings.warn("careful", UserWarning, stacklevel=1)
        raise RuntimeError("broken")

    monkeypatch.setattr("lenssample.cli.bench.load", warn_then_fail)
    assert main(["bench"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "lenssample bench: warning: careful",
        "lenssample bench: error: RuntimeError: broken (rerun with --debug for the traceback)",
    ]
    with pytest.raises(RuntimeError, match="broken"), pytest.warns(UserWarning, match="careful"):
        main(["bench", "--debug"])


def test_ctrl_c_while_the_subcommands_import_is_one_line(capsys, monkeypatch):
    """Fresh probe: Ctrl-C in the first seconds (torch and transformers importing) printed a traceback."""
    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr("lenssample.cli.build_parser", interrupted)
    assert main(["generate", "hi"]) == 130
    assert capsys.readouterr().err.strip() == "lenssample: interrupted"


def test_help_and_unknown_commands_answer_without_importing_torch():
    """`lenssample --help` took 8-10 s importing torch and transformers for every subcommand; only the command named
    is built now, and `import lenssample` imports its public names on first use."""
    code = (
        "import sys, lenssample, lenssample.cli as cli\n"
        "assert cli.main(['--help']) == 0 and cli.main(['no-such-command']) == 2\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'\n"
        "assert lenssample.FinalLayer.name == 'final' and 'torch' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "generate" in done.stdout and "invalid choice: 'no-such-command'" in done.stderr


def test_every_public_name_resolves():
    import lenssample

    missing = [name for name in lenssample.__all__ if getattr(lenssample, name, None) is None]
    assert missing == []
    assert set(lenssample.__all__) <= set(dir(lenssample))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        lenssample.nonexistent  # noqa: B018
    assert callable(lenssample.analysis.trajectory) and callable(lenssample.data.wikipedia)  # subpackages too


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 2048000000 bytes."),
    MemoryError(),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
], ids=["cpu-allocator", "python", "cuda"])  # fmt: skip
def test_running_out_of_memory_is_one_line_saying_what_to_ask_for(error, capsys, monkeypatch):
    """Fresh probe: `bench --batch 1000000` ended in the CPU allocator's RuntimeError."""
    def allocate(args):
        raise error

    monkeypatch.setattr("lenssample.cli.bench.load", allocate)
    assert main(["bench"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("lenssample bench: error: out of memory (") and "a smaller --batch" in line
    assert "--debug" not in line
