"""Every code block of README.md and every script in examples/, run as a new user would (issue 18).

Bash blocks run as written with ``bash -euo pipefail``, in a scratch folder laid out like the repository root
(``examples`` linked, ``evals/configs`` copied, an empty ``evals/results``), with ``HOME`` pointing at a scratch
home whose ``~/.cache/lenssample/models`` links the converted models (so ``~/.cache/lenssample/lenses/...`` of the
README is the scratch home's, and nothing of the user's is touched). Python blocks run in order in one interpreter
and one namespace, as typed into one session (later blocks use ``model``, ``tokenizer`` and ``ids`` of the first).
``PATH`` starts with the directory of the interpreter running the tests (the virtual environment's ``bin``) and
``PYTHONPATH`` with the checkout this file is in, so a fresh clone with its own ``.venv`` tests itself.

Heavy commands run with smaller sizes, by the explicit substitutions of ``BLOCKS`` (README text -> what runs); every
substituted text must still be in the README, and every block must be in ``BLOCKS``: a new block fails
:func:`test_every_block_is_covered` until it is added there (with ``FAST`` or ``FULL`` and its substitutions).
``FULL`` blocks (training, the evaluation sweep, compiling, lm-eval, the schedules' search) are marked
``readme_full`` and skipped by ``make test``; run them with ``pytest -m readme_full tests/test_readme.py`` (or
``LENSSAMPLE_README_FULL=1``). Every run checks that ``git status --porcelain`` is unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
pytestmark = pytest.mark.real


@dataclass(frozen=True)
class Block:
    lang: str  # "python", "bash", or "" (a fence without a language)
    line: int  # 1-based line of the opening fence
    text: str

    @property
    def key(self) -> str:
        """The block's first line: how BLOCKS names it."""
        return self.text.strip().splitlines()[0].strip()


def readme_blocks() -> list[Block]:
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^```\s*(\S*)\s*$", line)
        if fence and lang is None:
            lang, start, body = fence.group(1), number, []
        elif fence:
            blocks.append(Block(lang, start, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the block opened at line {start} is never closed"
    return blocks


FAST, FULL, NOT_CODE = "fast", "full", "not code"

# How each README block runs: {first line: (FAST | FULL | NOT_CODE, {README text: what runs instead})}.
# A substitution keeps the command and shrinks its sizes; each is a documented stand-in for the README's text.
BLOCKS: dict[str, tuple[str, dict[str, str]]] = {
    # `make demo` = set-up (done: this interpreter is the set-up's) + `lenssample demo`; `make test` is this suite.
    "make demo   # set-up (.venv, torch 2.13.0 CPU, lenssample, the embedded default model) + a lens decoder and a logit-lens table": (
        FAST,
        {"make demo": "lenssample demo --max-new-tokens 4", "make test": "true  # this suite: make test"},
    ),
    "import lenssample": (FAST, {}),
    "from transformers import TextStreamer": (FAST, {}),
    'lenssample generate "The capital of France is" --max-new-tokens 16': (FULL, {}),  # 4 model loads, ~100 tokens
    'out = lenssample.generate(model, "The capital of France is", "dola:layers=high", tokenizer=tokenizer,': (
        FULL,  # compiles (10-30 s, a C compiler)
        {},
    ),
    'lenssample export-decoder my-dola --strategy dola:layers=high   # model.generate(ids, custom_generate="my-dola", trust_remote_code=True)': (
        FULL,  # lm-eval's start-up
        {},
    ),
    "lenssample/validation.py   argument checks with \"did you mean\" (every public entry validates before model work)": (
        NOT_CODE,  # the package layout
        {},
    ),
    'lenssample lens "The Eiffel Tower is in Paris. The Colosseum is in Rome. The Brandenburg Gate is in" --last 14 --out lens.png': (
        FULL,  # 5 model loads
        {},
    ),
    "lenssample train-lens                       # --model ..., --data mixed|books|wikipedia|FILE, --out DIR, --steps 250, --max-tokens 32768, --placement after-norm|before-norm": (
        FULL,
        {
            "lenssample train-lens ": "lenssample train-lens --steps 2 --max-tokens 1024 --cache-positions 256 ",
            "--lens ~/.cache/lenssample/lenses/smollm2-135m-instruct   #": "--lens ~/.cache/lenssample/lenses/smollm2-135m-instruct --positions 64 #",
        },
    ),
    "from lenssample.lens import TunedLens, train_tuned_lens": (
        FULL,
        {'checkpoint_dir="ckpt")': 'checkpoint_dir="ckpt", steps=2, max_tokens=1024, cache_positions=256)'},
    ),
    "from lenssample import EarlyExit, MaxProb, SelfSpeculative, LayerDraft, SkipDraft": (FULL, {}),
    'lenssample generate "The capital of France is" --schedule speculative:draft_layer=24,k=4 --json': (FULL, {}),
    "lenssample eval evals/configs/default.toml                        # the default sweep -> evals/results/default/": (
        FULL,
        {
            "evals/configs/default.toml": "evals/configs/readme_small.toml",  # default.toml with SMALL_SWEEP sizes
            "--new-tokens 64 --repeats 3": "--new-tokens 4 --repeats 1",
        },
    ),
}
# The default sweep's sizes, shrunk for readme_small.toml (regex on default.toml -> replacement).
SMALL_SWEEP = {
    r"(?m)^limit = \d+": "limit = 2",
    r"(?m)^max_tokens = \d+": "max_tokens = 512",
    r"(?m)^max_new_tokens = \d+": "max_new_tokens = 4",
    r"(?m)^new_tokens = \d+": "new_tokens = 4",
    r"(?m)^repeats = \d+": "repeats = 1",
    r"(?m)^bootstrap_resamples = \d+": "bootstrap_resamples = 50",
}
# Every script in examples/: its arguments (the output folder is added as --out where the script takes one).
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "compare_strategies.py": (FULL, []),  # 7 strategies x 2 prompts x 20 tokens
    "decoding_trace.py": (FULL, ["--out", "{out}"]),
    "generate_from_a_layer.py": (FULL, []),
    "layer_curves.py": (FULL, ["--out", "{out}"]),
    "lens_heatmap.py": (FAST, ["--out", "{out}"]),
    "logit_lens_table.py": (FAST, []),
}
EXAMPLE_OUTPUTS = {
    "decoding_trace.py": ["decoding_trace.png"],
    "layer_curves.py": ["layer_curves.png"],
    "lens_heatmap.py": ["lens_heatmap_prob.png", "lens_heatmap_rank.png", "lens_heatmap.html"],
}


def git_status() -> str:
    if not (REPO / ".git").exists():
        return ""
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.fixture(autouse=True)
def tracked_files_untouched(request):
    full = request.node.get_closest_marker("readme_full") is not None
    if full and "readme_full" not in (request.config.getoption("markexpr") or "") and not os.environ.get(
        "LENSSAMPLE_README_FULL"
    ):
        pytest.skip("expensive README command: run with `pytest -m readme_full tests/test_readme.py`")
    before = git_status()
    yield
    assert git_status() == before, "running the README/examples changed files of the repository"


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict:
    """A scratch working folder laid out like the repository root, a scratch home, and the environment."""
    from lenssample.model.loading import cache_root, load_model

    load_model()  # convert the embedded model once, into the real cache
    root = tmp_path_factory.mktemp("readme")
    work, home = root / "work", root / "home"
    (work / "evals" / "results").mkdir(parents=True)
    (work / "examples").symlink_to(REPO / "examples")
    shutil.copytree(REPO / "evals" / "configs", work / "evals" / "configs")
    small = (work / "evals" / "configs" / "default.toml").read_text()
    for pattern, replacement in SMALL_SWEEP.items():
        small = re.sub(pattern, replacement, small)
    (work / "evals" / "configs" / "readme_small.toml").write_text(small)
    (home / ".cache" / "lenssample").mkdir(parents=True)
    (home / ".cache" / "lenssample" / "models").symlink_to(cache_root() / "models")
    env = {k: v for k, v in os.environ.items() if k not in ("LENSSAMPLE_CACHE", "PYTHONPATH")}
    env.update(
        HOME=str(home),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=str(REPO),
        MPLBACKEND="Agg",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return {"work": work, "home": home, "env": env}


def substituted(block: Block) -> str:
    kind, subs = BLOCKS[block.key]
    text = block.text
    for old, new in subs.items():
        assert old in text, f"README line {block.line}: BLOCKS substitutes {old!r}, no longer in the block"
        text = text.replace(old, new)
    return text


def run(args: list[str], user: dict, timeout: int, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=user["work"], env=user["env"], capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_every_block_is_covered():
    blocks = readme_blocks()
    keys = [b.key for b in blocks]
    missing = [f"line {b.line}: {b.key!r}" for b in blocks if b.key not in BLOCKS]
    assert not missing, "README blocks with no entry in tests/test_readme.py BLOCKS: " + "; ".join(missing)
    stale = [key for key in BLOCKS if key not in keys]
    assert not stale, f"BLOCKS names blocks no longer in the README: {stale}"
    for block in blocks:  # a fence without a language runs as bash unless it is NOT_CODE
        assert block.lang in ("python", "bash", ""), f"README line {block.line}: unknown language {block.lang!r}"
        substituted(block)  # every substituted text is still there
    scripts = sorted(p.name for p in (REPO / "examples").glob("*.py"))
    assert scripts == sorted(EXAMPLES), f"examples/ has {scripts}; EXAMPLES lists {sorted(EXAMPLES)}"


def _bash_blocks(kind: str) -> list:
    return [
        pytest.param(b, id=f"line{b.line}", marks=[pytest.mark.readme_full] if kind == FULL else [])
        for b in readme_blocks()
        if b.lang != "python" and BLOCKS.get(b.key, (None,))[0] == kind
    ]


@pytest.mark.parametrize("block", _bash_blocks(FAST) + _bash_blocks(FULL))
def test_bash_block(block: Block, user: dict):
    script = substituted(block)
    result = run(["bash", "-euo", "pipefail", "-c", script], user, timeout=1800, what=f"README line {block.line}")
    if "lenssample generate" in script or "lenssample demo" in script:
        assert "Loading weights" not in result.stderr  # no transformers progress bar on the command line
    for produced in re.findall(r"--out (\S+\.(?:png|html))", script):
        assert (user["work"] / produced).is_file(), f"README line {block.line}: {produced} was not written"


def _python(kinds: tuple[str, ...], user: dict) -> subprocess.CompletedProcess:
    """The README's python blocks of the given kinds, in order, in one interpreter and one namespace."""
    blocks = [b for b in readme_blocks() if b.lang == "python" and BLOCKS.get(b.key, (None,))[0] in kinds]
    code = "\n".join(
        f"print('--- README line {b.line}', flush=True)\nexec(compile({substituted(b)!r}, 'README.md:{b.line}', 'exec'))"
        for b in blocks
    )
    return run([sys.executable, "-c", code], user, timeout=1800, what="README python blocks")


def test_python_blocks(user: dict):
    result = _python((FAST,), user)
    assert "The capital of France is" in result.stdout  # the TextStreamer printed the prompt and the tokens
    assert "max_length" not in result.stderr  # no warning about model-agnostic max_length


@pytest.mark.readme_full
def test_python_blocks_full(user: dict):
    _python((FAST, FULL), user)
    assert (user["work"] / "my-lens" / "config.json").is_file()


def _examples(kind: str) -> list:
    return [
        pytest.param(name, id=name, marks=[pytest.mark.readme_full] if k == FULL else [])
        for name, (k, _) in EXAMPLES.items()
        if k == kind
    ]


@pytest.mark.parametrize("name", _examples(FAST) + _examples(FULL))
def test_example(name: str, user: dict, tmp_path: Path):
    args = [a.format(out=tmp_path / "out") for a in EXAMPLES[name][1]]
    run([sys.executable, f"examples/{name}", *args], user, timeout=1800, what=f"examples/{name}")
    for produced in EXAMPLE_OUTPUTS.get(name, []):
        assert (tmp_path / "out" / produced).is_file(), f"examples/{name} did not write {produced}"
