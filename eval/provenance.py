"""Provenance: what a run was made from, recorded in results.json so a result can be traced and redone.

Git SHA and dirty flag, package versions, model, data and adapter hashes, the eval config and the
settings. `model_hash` is also part of the answer cache key (eval/cache.py). It does not score or
write anything.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import time
from pathlib import Path

from eval.config import EvalConfig

PACKAGES = ("ragvsft", "torch", "transformers", "peft", "sentence-transformers", "faiss-cpu", "bm25s", "openai")
ROOT = Path(__file__).resolve().parent.parent


def model_hash(model: str | Path, config_name: str = "config.json") -> str | None:
    """A local model (or adapter) folder's identity: its config file and its files' names and sizes
    (hashing the weights would take longer than a short eval run). None for a name that is not a folder."""
    config_file = Path(model) / config_name
    if not config_file.is_file():
        return None
    listing = sorted((p.name, p.stat().st_size) for p in Path(model).iterdir() if p.is_file())
    return hashlib.sha256((config_file.read_text() + json.dumps(listing)).encode()).hexdigest()[:16]


def provenance(settings, config: EvalConfig, model: str, adapter, root: Path = ROOT,
               embedder: str | None = None) -> dict:
    """`embedder`: the embedding model's name as the collection records it (an adapted copy's too)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_sha": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "packages": versions,
        "model": model, "model_hash": model_hash(model), "embedding_model": embedder or settings.embedding_model,
        "qa_sha256": hashlib.sha256(Path(config.qa or Path(config.beir) / "queries.jsonl").read_bytes()).hexdigest()[:16],
        "adapter": None if adapter is None else {"name": adapter.name, "method": adapter.card.get("method"),
                                                 "rank": adapter.rank, "data_sha256": adapter.card.get("data_sha256")},
        "config": config.as_dict(),
        "settings": {k: str(v) for k, v in settings.__dict__.items() if k not in ("api_key",)},
    }
