"""BEIR format: read and write a retrieval test set as corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

The layout of Thakur et al. (2021), https://github.com/beir-cellar/beir: corpus rows are
{"_id", "title", "text"}, query rows {"_id", "text"}, and the qrels file is tab-separated with the
header `query-id  corpus-id  score` and integer relevance grades. Ids are strings. Every query is
kept, judged or not (BEIR's own loader drops queries without qrels; metrics here return NaN for
them). Bad input raises ValueError naming the file, the line and the reason. It does not score
rankings (see eval.metrics) or build data sets (see scripts/make_python_faq_beir.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rag.errors import ConfigError
from rag.jsonl import read_lines

QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass
class BeirSet:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}
    queries: dict[str, str]  # query id -> question text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance grade}


def load_beir(folder: str | Path, split: str = "test") -> BeirSet:
    folder = Path(folder)
    corpus = {
        doc_id: {"title": str(row.get("title") or ""), "text": text}
        for doc_id, text, row in _read_jsonl(folder / "corpus.jsonl")
    }
    queries = {query_id: text for query_id, text, _ in _read_jsonl(folder / "queries.jsonl")}
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv", queries, corpus)
    return BeirSet(corpus, queries, qrels)


def write_beir(folder: str | Path, corpus: dict[str, dict[str, str]], queries: dict[str, str],
               qrels: dict[str, dict[str, int]], split: str = "test") -> None:
    """Write the three files, creating folders; the qrels are checked before anything is written."""
    for query_id, judged in qrels.items():
        if query_id not in queries:
            raise ConfigError(f"qrels name query {query_id!r}, which is not among the queries")
        for doc_id, score in judged.items():
            if doc_id not in corpus:
                raise ConfigError(f"qrels for query {query_id!r} name doc {doc_id!r}, which is not in the corpus")
            if not isinstance(score, int) or isinstance(score, bool):
                raise ConfigError(f"qrels score for ({query_id!r}, {doc_id!r}) must be an int, got {score!r}")
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            row = {"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for query_id, text in queries.items():
            f.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(QRELS_HEADER) + "\n")
        for query_id, judged in qrels.items():
            for doc_id, score in judged.items():
                f.write(f"{query_id}\t{doc_id}\t{score}\n")


def _read_jsonl(path: Path) -> Iterator[tuple[str, str, dict]]:
    """(id, text, row) for each row; ids are unique and rows carry a string text."""
    seen: set[str] = set()
    for number, line in read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: bad JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        if row.get("_id") in (None, ""):
            raise ConfigError(f"{path}:{number}: missing '_id'")
        row_id = str(row["_id"])  # some published sets write numeric ids
        if row_id in seen:
            raise ConfigError(f"{path}:{number}: duplicate _id {row_id!r}")
        if not isinstance(row.get("text"), str):
            raise ConfigError(f"{path}:{number}: missing 'text' string for _id {row_id!r}")
        seen.add(row_id)
        yield row_id, row["text"], row


def _read_qrels(path: Path, queries: dict[str, str], corpus: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    lines = read_lines(path)
    first = next(lines, None)
    if first is None or tuple(first[1].split("\t")) != QRELS_HEADER:
        where = f"{path}:{first[0]}" if first else str(path)
        raise ConfigError(f"{where}: expected the tab-separated header query-id, corpus-id, score")
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3:
            raise ConfigError(
                f"{path}:{number}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(fields)}"
            )
        query_id, doc_id, score = fields
        try:
            grade = int(score)
        except ValueError:
            raise ConfigError(f"{path}:{number}: score {score!r} is not an integer") from None
        if query_id not in queries:
            raise ConfigError(f"{path}:{number}: query-id {query_id!r} is not in queries.jsonl")
        if doc_id not in corpus:
            raise ConfigError(f"{path}:{number}: corpus-id {doc_id!r} is not in corpus.jsonl")
        if doc_id in qrels.get(query_id, {}):
            raise ConfigError(f"{path}:{number}: duplicate judgement for ({query_id!r}, {doc_id!r})")
        qrels.setdefault(query_id, {})[doc_id] = grade
    return qrels


def doc_file_name(doc_id: str) -> str:
    """The file a corpus document is ingested as: ids hold '/', '#' and run long, so a hash names it."""
    import hashlib

    return hashlib.sha1(doc_id.encode("utf-8")).hexdigest()[:20] + ".txt"


def write_corpus_files(beir: BeirSet, folder: str | Path) -> int:
    """Each corpus document's text as `doc_file_name(id)` under `folder`, for `rag ingest`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, doc in beir.corpus.items():
        (folder / doc_file_name(doc_id)).write_text(doc["text"], encoding="utf-8")
    return len(beir.corpus)
