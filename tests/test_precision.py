"""The embedding model's precision: chosen from the hardware, recorded in the collection, never mixed
within one, and converted in place by `rag ingest --reembed` (real MiniLM, real FAISS and SQLite)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rag.chunking import indexed_text
from rag.components import make_embedder, open_collection
from rag.embedding import SentenceTransformerEmbedder, cpu_has_bf16, pick_dtype
from rag.errors import ConfigError
from rag.retriever import Retriever
from rag.settings import Settings
from rag.store import Collection, recorded_dtype

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
QUESTIONS = ["When was the Korvik Island Lighthouse first lit?", "Which plant does tea come from?",
             "How long do marmots hibernate?"]


@pytest.fixture(scope="module")
def bf16_embedder():
    return SentenceTransformerEmbedder(device="cpu", dtype="bfloat16")


def test_auto_precision_follows_the_hardware(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not cpu_has_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert cpu_has_bf16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_has_bf16(cpuinfo)
    assert not cpu_has_bf16(tmp_path / "missing")  # not Linux: float32
    assert pick_dtype("auto", "cuda") == "float16"
    assert pick_dtype("auto", "cpu") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert pick_dtype("float32", "cuda") == "float32"
    with pytest.raises(ConfigError, match="embedding_dtype must be one of auto, float32, bfloat16, float16; got 'int4'"):
        pick_dtype("int4", "cpu")
    with pytest.raises(ConfigError, match="embedding_dtype must be one of"):
        Settings(embedding_dtype="fp8")


def test_bfloat16_vectors_are_unit_float32_and_within_noise_of_float32(embedder, bf16_embedder):
    assert {p.dtype for p in bf16_embedder._model.parameters()} == {torch.bfloat16}
    texts = [p.read_text(encoding="utf-8", errors="replace")[:1500] for p in sorted(SAMPLE.iterdir()) if p.is_file()]
    texts += QUESTIONS
    full, half = embedder.embed(texts), bf16_embedder.embed(texts)
    assert half.dtype == np.float32 and half.shape == full.shape
    assert np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)  # normalised in float32, not in bf16
    cosines = np.sum(full * half, axis=1)
    assert cosines.min() > 0.99 and not np.allclose(full, half, atol=1e-4)  # close, yet really computed in bf16


def test_the_named_precision_is_the_one_computed_in_whatever_the_checkpoint_stores(tmp_path):
    """A model folder whose weights are stored in float16 still runs in float32 when float32 is asked:
    the collection records the precision its vectors were really computed in."""
    from safetensors.torch import load_file, save_file

    from rag.embedding import resolve_model_path

    folder = tmp_path / "minilm-fp16"
    source = Path(resolve_model_path("all-MiniLM-L6-v2"))
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.half() for k, v in weights.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    for dtype in ("float32", "bfloat16"):
        embedder = SentenceTransformerEmbedder(str(folder), device="cpu", dtype=dtype)
        assert {p.dtype for p in embedder._model.parameters()} == {getattr(torch, dtype)}


def test_a_collection_records_its_precision_and_refuses_mixing(tmp_path, embedder, bf16_embedder, chunker):
    from ingest.pipeline import ingest

    settings = Settings(home=tmp_path, collection="mixed", embedding_dtype="float32")
    collection = open_collection(settings, embedder, create=True)
    assert collection.get_meta("embedding_dtype") == "float32" == recorded_dtype(settings.collection_dir)
    ingest([SAMPLE / "green_tea.txt"], collection, embedder, chunker)
    collection.close()
    # auto means the collection's own precision, whatever this machine would pick for a new one
    assert make_embedder(settings.replace(embedding_dtype="auto")).dtype == "float32"
    with pytest.raises(ConfigError, match=r"collection 'mixed' holds float32 vectors but embedding_dtype gives "
                                          r"bfloat16: .*rag ingest --reembed -c mixed"):
        open_collection(settings, bf16_embedder, create=True)
    # reading (queries only) is not writing: a query in another precision is allowed
    open_collection(settings, bf16_embedder).close()
    # ingest into a new collection opened without the settings records the embedder's precision too
    direct = Collection.open(tmp_path / "direct", bf16_embedder.name, bf16_embedder.dim, create=True)
    ingest([SAMPLE / "green_tea.txt"], direct, bf16_embedder, chunker)
    assert direct.get_meta("embedding_dtype") == "bfloat16" == recorded_dtype(tmp_path / "direct")
    # a collection made before the precision was recorded holds float32 vectors
    legacy = Collection.open(tmp_path / "legacy", embedder.name, embedder.dim, create=True)
    ingest([SAMPLE / "green_tea.txt"], legacy, embedder, chunker)
    with legacy.db:
        legacy.db.execute("DELETE FROM meta WHERE key = 'embedding_dtype'")
    assert legacy.get_meta("embedding_dtype") is None and legacy.embedding_dtype == "float32"
    assert recorded_dtype(tmp_path / "legacy") == "float32" and recorded_dtype(tmp_path / "none") is None


def test_reembed_converts_in_one_generation_and_a_crash_leaves_the_old_vectors(
        sample_collection, tmp_path, embedder, bf16_embedder):
    from ingest.pipeline import reembed

    folder = tmp_path / "copy"
    shutil.copytree(sample_collection.folder, folder, ignore=shutil.ignore_patterns("*.lock"))
    collection = Collection.open(folder)
    vids = [c.vid for c in collection.all_chunks()]
    before, generation = collection.vectors_by_vid(vids), collection.generation
    top = {q: Retriever(collection, embedder).search(q, k=1, mode="dense")[0].chunk_id for q in QUESTIONS}

    def failing(texts):
        failing.calls += 1
        if failing.calls == 2:
            raise RuntimeError("killed mid-way")
        return bf16_embedder.embed(texts)

    failing.calls = 0
    with pytest.raises(RuntimeError, match="killed mid-way"):
        with collection.writer() as writer:
            writer.reembed(failing, {"embedding_dtype": "bfloat16"}, batch=8)
    reopened = Collection.open(folder)
    assert reopened.generation == generation and reopened.embedding_dtype == "float32"
    assert np.array_equal(reopened.vectors_by_vid(vids), before)

    result = reembed(reopened, bf16_embedder)
    assert result["chunks"] == len(vids) and result["embedding_dtype"] == "bfloat16"
    after = Collection.open(folder)
    assert after.generation == generation + 1 and after.embedding_dtype == "bfloat16"
    chunks = after.chunks_by_vid(vids)
    texts = [indexed_text(chunks[vid].heading, chunks[vid].text) for vid in vids]
    assert np.allclose(after.vectors_by_vid(vids), bf16_embedder.embed(texts), atol=1e-6)
    assert not np.allclose(after.vectors_by_vid(vids), before, atol=1e-4)
    assert after.index.ntotal == len(vids)
    assert {q: Retriever(after, bf16_embedder).search(q, k=1, mode="dense")[0].chunk_id for q in QUESTIONS} == top


def test_cli_reembed(tmp_path):
    env = {**os.environ, "RAG_HOME": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE", "RAG_EMBEDDING_DTYPE": "float32"}

    def rag(*args, **extra):
        return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, timeout=600,
                              env={**env, **extra})

    assert rag("ingest", str(SAMPLE / "green_tea.txt"), "-c", "p").returncode == 0
    mixed = rag("ingest", str(SAMPLE / "green_tea.txt"), "-c", "p", RAG_EMBEDDING_DTYPE="bfloat16")
    assert mixed.returncode == 2 and mixed.stderr.strip().startswith("error: collection 'p' holds float32 vectors")
    assert "Traceback" not in mixed.stderr
    done = rag("ingest", "--reembed", "-c", "p", "--json", RAG_EMBEDDING_DTYPE="bfloat16")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["collection"] == "p" and out["chunks"] > 0 and out["embedding_dtype"] == "bfloat16"
    assert recorded_dtype(tmp_path / "p") == "bfloat16"
    # now auto follows the collection: ingesting with the default settings adds bf16 vectors
    again = rag("ingest", str(SAMPLE), "-c", "p", "--json", RAG_EMBEDDING_DTYPE="auto")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["files"]["new"] == 3
    nothing = rag("ingest", "-c", "p")
    assert nothing.returncode == 2 and "give files, folders or globs to ingest" in nothing.stderr
