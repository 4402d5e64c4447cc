"""Run every question through every arm (base, rag, lora, lora+rag) and record answers and costs.

Answers are appended to `<out>/answers.jsonl` as they come, keyed by question x arm x a hash of
what the answer depends on, so an interrupted run resumes where it stopped and a changed setting
re-asks only what it changes. Also measured: the retrieval ranking per question, the index build
time (the collection's files re-ingested into a scratch collection), and the knowledge update (new
documents: RAG ingests them, LoRA trains a new adapter on them). It does not score or report
(eval/scoring.py, eval/report.py).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from eval.config import LORA_ARMS, RAG_ARMS, EvalConfig
from rag.answer import Assistant
from rag.components import make_assistant
from rag.errors import ConfigError
from rag.generator import Generator
from rag.jsonl import read_jsonl
from rag.retriever import Hit, Retriever
from rag.settings import Settings

ANSWERS_FILE = "answers.jsonl"


@dataclass
class Record:
    qid: str
    arm: str
    question: str
    answer: str
    sources: list[dict]  # {source, chunk_id, text} of the passages in the prompt, in prompt order
    seconds: float
    prompt_tokens: int | None
    completion_tokens: int | None
    key: str = ""


@dataclass
class RunData:
    questions: list[dict]
    records: list[Record]
    rankings: dict[str, list[dict]]  # qid -> [{chunk_id, source, text}] best first, retrieval_k deep
    relevant: dict[str, list[str]]  # qid -> ids of the chunks that hold the gold evidence
    costs: dict = field(default_factory=dict)
    update: dict = field(default_factory=dict)


def read_qa(path: Path) -> list[dict]:
    """Questions with gold answers; ValueError naming the file and line for a bad row."""
    rows, seen = [], set()
    for number, row in read_jsonl(path):
        if not isinstance(row, dict) or not str(row.get("question", "")).strip():
            raise ConfigError(f"{path}:{number}: expected an object with a non-empty 'question'")
        row.setdefault("id", f"q{number}")
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise ConfigError(f"{path}:{number}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        if not isinstance(row.setdefault("facts", []), list):
            raise ConfigError(f"{path}:{number}: 'facts' must be a list of strings")
        row.setdefault("answer", "")
        row.setdefault("evidence", "")
        row.setdefault("answerable", bool(row["answer"]))
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no questions")
    return rows


def _source_dict(hit: Hit) -> dict:
    return {"source": Path(hit.source).name, "chunk_id": hit.chunk_id, "text": hit.text}


class Arms:
    """The generators and retriever behind the four arms; messages are built by rag.answer."""

    def __init__(self, retriever: Retriever | None, base: Generator, tuned: Generator | None, settings: Settings,
                 count_tokens: Callable[[list[dict] | str], int | None]):
        self.retriever = retriever
        self.base, self.tuned = base, tuned
        self.settings = settings
        self.count_tokens = count_tokens

    def assistant(self, arm: str) -> Assistant:
        generator = self.tuned if arm in LORA_ARMS else self.base
        if generator is None:
            raise ConfigError(f"arm {arm!r} needs an adapter")
        return make_assistant(self.settings, generator, self.retriever)

    def ask(self, arm: str, row: dict, key: str) -> Record:
        # The product's own answering path, so the eval scores exactly what a user is shown.
        answer = self.assistant(arm).ask(row["question"], "rag" if arm in RAG_ARMS else "base")
        return Record(row["id"], arm, row["question"], answer.answer, [_source_dict(h) for h in answer.sources],
                      answer.timings["total_s"], self.count_tokens(answer.messages), self.count_tokens(answer.answer),
                      key)


def token_counter(model_path: str | None) -> Callable[[list[dict] | str], int | None]:
    """Counts prompt (chat messages) and answer tokens with the model's own tokenizer."""
    tokenizer = None
    if model_path:
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_path)
        except (OSError, ValueError):
            tokenizer = None

    def count(value: list[dict] | str) -> int | None:
        if tokenizer is None:
            return None
        if isinstance(value, str):
            return len(tokenizer(value, add_special_tokens=False)["input_ids"])
        return len(tokenizer.apply_chat_template(value, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    return count


def load_cache(out: Path) -> dict[tuple[str, str, str], Record]:
    path = out / ANSWERS_FILE
    cache = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = Record(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a line cut short by an interrupted run
            cache[(record.qid, record.arm, record.key)] = record
    return cache


def answer_all(config: EvalConfig, arms: Arms, questions: list[dict], keys: dict[str, str],
               progress: Callable = lambda items, **_: items) -> list[Record]:
    """Every question through every arm, reusing cached answers with the same key."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    cache = load_cache(out)
    records = []
    todo = [(row, arm) for row in questions for arm in config.arms]
    with open(out / ANSWERS_FILE, "a", encoding="utf-8") as sink:
        for row, arm in progress(todo, desc="answers", unit="answer"):
            cached = cache.get((row["id"], arm, keys[arm]))
            if cached is None:
                cached = arms.ask(arm, row, keys[arm])
                sink.write(json.dumps(asdict(cached)) + "\n")
                sink.flush()
            records.append(cached)
    return records


def rankings(retriever: Retriever, questions: list[dict], depth: int, mode: str) -> dict[str, list[dict]]:
    return {row["id"]: [_source_dict(h) for h in retriever.search(row["question"], k=depth, mode=mode)]
            for row in questions}


def relevant_chunks(collection, questions: list[dict]) -> dict[str, list[str]]:
    """Per question, the chunks whose text holds its gold evidence sentence."""
    from eval.metrics import evidence_in_text

    chunks = collection.all_chunks()
    found = {}
    for row in questions:
        evidence = row.get("evidence") or ""
        found[row["id"]] = [c.id for c in chunks if evidence and evidence_in_text(evidence, c.text)]
    return found


def beir_questions(folder: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Questions from a BEIR folder's queries (gold answers from its qa.jsonl when it has one, as the
    Python FAQ builder writes), and its qrels."""
    from eval.beir import load_beir

    beir = load_beir(folder)
    gold = {row["id"]: row for row in read_qa(Path(folder) / "qa.jsonl")} if (Path(folder) / "qa.jsonl").is_file() else {}
    questions = [gold.get(qid) or {"id": qid, "question": text, "answer": "", "evidence": "", "facts": [],
                                   "answerable": True} for qid, text in beir.queries.items()]
    return questions, beir.qrels


def relevant_from_qrels(collection, qrels: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """Per query, the chunks of its relevant documents' files (`eval.beir.doc_file_name`; a file named
    `<id>.txt` also counts, for ids that are safe file names)."""
    from eval.beir import doc_file_name

    by_file: dict[str, list[str]] = {}
    for chunk in collection.all_chunks():
        by_file.setdefault(Path(chunk.source).name, []).append(chunk.id)
    return {qid: [cid for doc, grade in docs.items() if grade > 0
                  for cid in by_file.get(doc_file_name(doc), by_file.get(f"{doc}.txt", []))]
            for qid, docs in qrels.items()}


def index_build_seconds(collection, embedder, chunker, scratch: Path) -> dict:
    """Re-ingest the collection's own files into a scratch collection: what building the index costs."""
    from ingest.pipeline import ingest
    from rag.store import Collection

    paths = [Path(p) for p in collection.file_hashes() if Path(p).is_file()]
    shutil.rmtree(scratch, ignore_errors=True)
    copy = Collection.open(scratch, embedder.name, embedder.dim, create=True)
    start = time.perf_counter()
    report = ingest(paths, copy, embedder, chunker)
    seconds = time.perf_counter() - start
    copy.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return {"index_build_s": seconds, "index_files": len(paths), "index_chunks": report.chunks_added}
