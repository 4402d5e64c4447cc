"""Recorded answers and their cache, `<out>/answers.jsonl`: one `Record` a line, reused while nothing
its final text depends on has changed.

An answer is found again by question, arm and key. The key hashes the exact messages sent to the
model (so the prompt templates, the retrieved passages and their order all count), the model and
adapter identity, the decoding settings, and the post-processing that rewrites the model's text in
rag/answer.py (loop guard, confidence gate, attribution, quote fallback): the Assistant's settings,
the public constants of those modules, and PIPELINE_VERSION. Lines are appended as answers come, so
an interrupted run resumes where it stopped; a line cut short is skipped. It does not ask the model
(eval/runner.py) or score answers (eval/scoring.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Self

import rag.answer
import rag.attribution
import rag.loops
from eval.provenance import model_hash
from rag.answer import Assistant
from rag.retriever import Hit

ANSWERS_FILE = "answers.jsonl"
# Bump when rag/answer.py, rag/loops.py or rag/attribution.py change the final text in a way that
# neither the Assistant's settings nor those modules' constants show: every cached answer is re-asked.
PIPELINE_VERSION = 1
POSTPROCESSING: tuple[ModuleType, ...] = (rag.answer, rag.loops, rag.attribution)


@dataclass(frozen=True)
class Passage:
    """A passage the answer's prompt held (or a retrieval hit), as recorded: file name, chunk id, text."""

    source: str
    chunk_id: str
    text: str

    @classmethod
    def from_hit(cls, hit: Hit) -> Passage:
        return cls(Path(hit.source).name, hit.chunk_id, hit.text)


@dataclass
class Record:
    qid: str
    arm: str
    question: str
    answer: str
    sources: list[Passage]  # the passages in the prompt, in prompt order
    seconds: float
    prompt_tokens: int | None
    completion_tokens: int | None
    key: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Record:
        return cls(**{**data, "sources": [Passage(**s) for s in data.get("sources") or []]})


def _plain(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return isinstance(value, (bool, int, float, str))


def postprocessing(assistant: Assistant) -> dict:
    """What turns the model's text into the final answer, besides the model: the Assistant's plain
    settings (decoding included), its resolved gate threshold, and the post-processing modules' constants."""
    settings = {name: value for name, value in vars(assistant).items()
                if value is None or isinstance(value, (bool, int, float, str))}
    settings.update(threshold=assistant.threshold(), attribute=assistant.attributor is not None)
    constants = {f"{module.__name__}.{name}": value for module in POSTPROCESSING for name, value in vars(module).items()
                 if name.isupper() and not name.startswith("_") and _plain(value)}
    return {"settings": settings, "constants": constants, "version": PIPELINE_VERSION}


def generator_identity(backend: str, model: str, model_path: str, embedding_model: str, adapter=None) -> dict:
    """Which model answers: its name and, for a local folder, its files; the LoRA adapter's name, card and
    files; the embedder (the gate and attribution compare its vectors)."""
    identity = {"backend": backend, "model": model or "embedded", "model_hash": model_hash(model_path),
                "embedding_model": embedding_model, "adapter": None}
    if adapter is not None:
        identity["adapter"] = {"name": adapter.name, "created": adapter.card.get("created"),
                               "data_sha256": adapter.card.get("data_sha256"),
                               "files": model_hash(adapter.path, config_name="adapter_config.json")}
    return identity


def answer_key(messages: list[dict], identity: dict) -> str:
    """The cache key of an answer to `messages` by the model and post-processing `identity` describes."""
    payload = json.dumps({"messages": messages, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class AnswerCache:
    """`<out>/answers.jsonl` read once, then appended to; use it as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._records: dict[tuple[str, str, str], Record] = {}
        text = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        for line in text.splitlines():
            try:
                record = Record.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError, AttributeError):
                continue  # a line cut short by an interrupted run
            self._records[(record.qid, record.arm, record.key)] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (closed by close())
        if text and not text.endswith("\n"):
            self._sink.write("\n")  # after a line cut short, the next answer starts a line of its own

    def get(self, qid: str, arm: str, key: str) -> Record | None:
        return self._records.get((qid, arm, key))

    def add(self, record: Record) -> None:
        self._sink.write(json.dumps(record.to_json()) + "\n")
        self._sink.flush()  # an interrupted run keeps every answer it finished
        self._records[(record.qid, record.arm, record.key)] = record

    def close(self) -> None:
        self._sink.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
