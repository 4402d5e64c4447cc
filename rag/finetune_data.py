"""Fine-tuning data built from the chunks a collection holds, with a held-out split.

Modes (what a training example looks like):
- `qa`: a question alone, answered by the sentence that states the fact (the "lora" arm's prompt);
- `cpt`: raw chunk text, for continued pre-training;
- `raft`: the question with the oracle chunk (with probability `oracle_p`) among distractor chunks,
  in the same numbered-context prompt the RAG arm uses, answered by quoting the source (RAFT, Zhang
  et al. 2024), so the adapter learns to use retrieval, not only to memorise.
- `reader`: RAFT for a reader adapter that is used on other documents than it was trained on: the
  distractors are the oracle's nearest chunks from other sections (hard negatives), the passages
  count stays the same with or without the oracle, and without it the answer is the no-answer
  sentence, so the adapter learns to quote and cite, or to abstain, rather than to recall facts.
  FAQ-style sections (a heading that is a question) add natural questions, answered by the first
  sentences under the heading.

Questions come from a teacher model on any OpenAI-compatible server when one is given (questions and
answers grounded in each chunk, plus paraphrases), or offline from a deterministic generator: each
fact-bearing sentence (a date, a number, a name) becomes cloze questions in several phrasings.
Fine-tuning learns a fact only from many paraphrases of it (Ovadia et al. 2023), so every fact gets
`paraphrases` + 1 phrasings. The held-out split holds back one phrasing of a share of the facts:
held-out questions never appear in training (checked here, and before training). It does not train.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from rag.errors import ConfigError, RagError
from rag.jsonl import read_jsonl
from rag.prompts import NO_ANSWER, base_messages, rag_messages

if TYPE_CHECKING:  # the store and the retriever bring FAISS and bm25s, which reading a dataset never needs
    from rag.retriever import Hit
    from rag.store import Collection, StoredChunk

DATA_MODES = ("qa", "cpt", "raft", "reader")
TRAIN_FILE, HELDOUT_FILE, META_FILE = "train.jsonl", "heldout.jsonl", "meta.json"

# Phrasings of an offline cloze question; {doc} names the source document, {cloze} is the sentence
# with the fact blanked out.
TEMPLATES = (
    'According to {doc}, what completes this statement: "{cloze}"',
    "Fill in the blank, using what {doc} says: {cloze}",
    '{doc} states: "{cloze}" What goes in the blank?',
    "Complete the fact from {doc}: {cloze}",
    "Which words complete this statement from {doc}? {cloze}",
    'What is missing here, according to {doc}? "{cloze}"',
)
BLANK = "____"
_SENTENCE_END = re.compile(r"(?<=[.!?])\*?\s+(?=[A-Z0-9\"'(])")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_UNITS = (
    "per cent|percent|%|°C|degrees Celsius|degrees|nautical miles|miles|kilometres|kilometers|km|metres|meters|m|"
    "centimetres|cm|millimetres|mm|kilograms|kg|grams|g|milligrams|mg|litres|liters|ml|years|months|weeks|days|"
    "hours|minutes|seconds|steps|watts|W|volts|V|GHz|MHz|beats|times|people|pages"
)
_NUMBER = r"\d[\d,.]*\d|\d"
_SPANS = (  # tried in order: dates, numbers (and ranges) with their unit, multi-word names
    re.compile(rf"\b\d{{1,2}} (?:{_MONTHS}) \d{{4}}\b|\b(?:{_MONTHS}) \d{{1,2}}, \d{{4}}\b"),
    re.compile(rf"\b(?:{_NUMBER})(?:\s?(?:to|and|-|–)\s?(?:{_NUMBER}))?(?:\s?(?:{_UNITS})\b)?"),
    re.compile(r"\b[A-Z][a-z]+(?:\s+(?:[A-Z][a-z]+|de|von|van))*\s+[A-Z][a-z]+"),
)
_NOT_NAMES = {"The", "A", "An", "This", "That", "These", "Those", "It", "In", "On", "At", "Since", "When",
              "During", "Its", "Their", "Our", "Your", "If", "For", "From", "After", "Before", "Each", "Every"}
TEACHER_SYSTEM = (
    "You write quiz questions about one passage. Every answer must be stated in the passage. "
    "Reply with JSON only."
)
TEACHER_SCHEMA = {
    "type": "object",
    "properties": {"pairs": {"type": "array", "maxItems": 5, "items": {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"},
                       "paraphrases": {"type": "array", "items": {"type": "string"}, "maxItems": 8}},
        "required": ["question", "answer", "paraphrases"]}}},
    "required": ["pairs"],
}


class DataError(RagError):
    """Training data that cannot be built or used; the message names the file or value."""


@dataclass
class Fact:
    id: str
    questions: list[str]  # phrasings of one question
    answer: str  # what the model should say
    span: str  # the key fact inside the answer (what recall is checked on)
    chunk: StoredChunk


@dataclass
class DataReport:
    out: Path
    mode: str
    generator: str
    facts: int
    train: int
    heldout: int
    excluded: int
    chunks: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in self.__dict__.items()}


def normalise_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def doc_name(source: str) -> str:
    """'korvik_lighthouse.md' -> 'the document "korvik lighthouse"'."""
    stem = Path(source).stem.replace("_", " ").replace("-", " ")
    return f'the document "{stem}"'


_BULLET = re.compile(r"^(?:[*\-•]|\d+[.)])\s+")


def sentences(text: str) -> list[str]:
    """Whole sentences of a chunk. Blank lines, bullets, headings and table rows end a segment;
    lines wrapped inside a sentence (PDF text) are joined again. A short line with no closing
    punctuation is a heading unless the next line continues it in lower case."""
    lines = [line.strip() for line in text.splitlines()]
    segments, current = [], []
    for n, line in enumerate(lines):
        following = lines[n + 1] if n + 1 < len(lines) else ""
        heading = line.startswith("#") or (
            len(line.split()) <= 8 and not line.endswith((".", "!", "?", ":", ",", ";"))
            and not following[:1].islower()
        )
        if not line or heading or "|" in line or _BULLET.match(line):
            segments.append(current)
            current = []
            if line and _BULLET.match(line) and "|" not in line:
                current = [_BULLET.sub("", line)]
            continue
        current.append(line)
    segments.append(current)
    found = []
    for segment in segments:
        flat = " ".join(" ".join(segment).split())
        found += [s.strip() for s in _SENTENCE_END.split(flat) if 6 <= len(s.split()) <= 45]
    return found


def key_span(sentence: str) -> str | None:
    """The fact a cloze question blanks out: a date, a number with its unit, or a multi-word name
    (never the sentence's first word, which is capitalised anyway)."""
    for pattern in _SPANS:
        for match in pattern.finditer(sentence):
            span = match.group().rstrip(".,;:")
            if match.start() == 0 or span.split()[0] in _NOT_NAMES or len(span) >= len(sentence) // 2:
                continue
            return span
    return None


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def offline_facts(chunks: list[StoredChunk], paraphrases: int) -> list[Fact]:
    facts, seen = [], set()
    for chunk in chunks:
        for sentence in sentences(chunk.text):
            span = key_span(sentence)
            if span is None or sentence in seen:
                continue
            seen.add(sentence)
            cloze = sentence.replace(span, BLANK, 1)
            doc = doc_name(chunk.source)
            n = len(facts)
            phrasings = [_capitalise(TEMPLATES[(n + j) % len(TEMPLATES)].format(doc=doc, cloze=cloze))
                         for j in range(min(paraphrases + 1, len(TEMPLATES)))]
            facts.append(Fact(f"f{n:05d}", phrasings, sentence, span, chunk))
    return facts


def teacher_facts(chunks: list[StoredChunk], paraphrases: int, ask: Callable[[str], str],
                  warnings: list[str]) -> list[Fact]:
    """Questions from a teacher model; `ask` sends one prompt and returns its JSON reply."""
    facts = []
    for chunk in chunks:
        prompt = (
            f"Passage (from {Path(chunk.source).name}):\n{chunk.text}\n\n"
            f"Write up to 3 questions whose answers are facts stated in the passage. For each, give a short "
            f"answer copied from the passage and {paraphrases} paraphrases of the question."
        )
        try:
            pairs = json.loads(ask(prompt))["pairs"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            warnings.append(f"{chunk.source}: chunk {chunk.id}: the teacher's reply is not the expected JSON ({exc})")
            continue
        for pair in pairs:
            question, answer = str(pair.get("question", "")).strip(), str(pair.get("answer", "")).strip()
            if not question or not answer:
                continue
            variants = [question] + [str(p).strip() for p in pair.get("paraphrases", []) if str(p).strip()]
            unique = list(dict.fromkeys(variants))[: paraphrases + 1]
            facts.append(Fact(f"f{len(facts):05d}", unique, answer, answer, chunk))
    return facts


def teacher_ask(base_url: str, model: str, api_key: str = "EMPTY", timeout: float = 120.0) -> Callable[[str], str]:
    """A teacher on an OpenAI-compatible server; vLLM constrains its reply to TEACHER_SCHEMA."""
    from rag.generator import OpenAIGenerator

    generator = OpenAIGenerator(base_url, model, api_key, timeout=timeout)

    def ask(prompt: str) -> str:
        messages = [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": prompt}]
        return generator.generate_json(messages, TEACHER_SCHEMA, name="qa_pairs")

    return ask


def _hit(chunk: StoredChunk) -> Hit:
    from rag.retriever import Hit

    return Hit(chunk.source, chunk.page, 1.0, chunk.text, chunk.id, chunk.start, chunk.end, heading=chunk.heading)


def _qa_row(fact: Fact, question: str, n: int, mode: str, chunks: list[StoredChunk], rng: random.Random,
            distractors: int, oracle_p: float) -> dict:
    row = {"id": f"{fact.id}-q{n}", "fact_id": fact.id, "question": question, "answer": fact.answer,
           "span": fact.span, "source": Path(fact.chunk.source).name, "chunk_ids": [fact.chunk.id]}
    if mode == "qa":
        row["messages"] = base_messages(question) + [{"role": "assistant", "content": fact.answer}]
        return row
    others = [c for c in chunks if c.id != fact.chunk.id]
    context = rng.sample(others, min(distractors, len(others)))
    with_oracle = rng.random() < oracle_p
    if with_oracle:
        context.insert(rng.randrange(len(context) + 1), fact.chunk)
        answer = f"{fact.answer} [{context.index(fact.chunk) + 1}]"
    else:
        answer = fact.answer  # no oracle: the answer comes from memory, as in RAFT
    row.update(oracle=with_oracle, chunk_ids=[c.id for c in context] if context else [fact.chunk.id])
    row["messages"] = rag_messages(question, [_hit(c) for c in context]) + [{"role": "assistant", "content": answer}]
    return row


_NUMBERING = re.compile(r"^(?:Chapter \d+:|[A-Z]?\d+(?:\.\d+)*[.:)]?|Q\d*[.:])\s+")  # "1.2:", "R13.", "Q:"
ANSWER_SENTENCES = 2  # a heading question's answer: the first sentences under it


def heading_facts(chunks: list[StoredChunk]) -> list[Fact]:
    """FAQ-style sections: a heading that is a question, answered by the first sentences of the
    section's first chunk."""
    first: dict[tuple[str, str], StoredChunk] = {}
    for chunk in chunks:  # ordered by path, then start
        if chunk.heading:
            first.setdefault((chunk.source, chunk.heading), chunk)
    facts = []
    for chunk in first.values():
        asked = heading_question(chunk)
        said = sentences(asked[1].text)[:ANSWER_SENTENCES] if asked else []
        if said:
            facts.append(Fact(f"h{len(facts):05d}", [asked[0]], " ".join(said), said[0], chunk))
    return facts


def heading_question(chunk: StoredChunk) -> tuple[str, StoredChunk] | None:
    """The question the chunk's section heading asks, without its numbering ("2.1. How do I ...?" ->
    "How do I ...?"), and the chunk without that heading; None when the heading asks no question."""
    title = _question_title(chunk)
    return None if title is None else (_NUMBERING.sub("", title), _question_heading_out(chunk))


def _question_title(chunk: StoredChunk) -> str | None:
    """The last heading of the chunk's section path when it asks a question ("2.1. How do I ...?")."""
    title = chunk.heading.rsplit(" > ", 1)[-1].strip()
    return title if title.endswith("?") else None


def _question_heading_out(chunk: StoredChunk) -> StoredChunk:
    """The chunk without its section's question heading, in the text (at the top, wrapped over lines
    or not) and in the heading path: a passage that answers must be recognised by what it says, not by
    a heading that repeats the question (most documents have none)."""
    title = _question_title(chunk)
    if title is None:
        return chunk
    words = _NUMBERING.sub("", title).split()
    top = re.search(r"(?:\S+\s+)?" + r"\s+".join(map(re.escape, words)), chunk.text[: 2 * len(title) + 40])
    text = chunk.text[top.end():].lstrip() if top else chunk.text
    parent = chunk.heading.rsplit(" > ", 1)[0] if " > " in chunk.heading else ""
    return replace(chunk, text=text, heading=parent)


QUESTION_HEADINGS_KEPT = 0.3  # share of reader examples whose passages keep their question headings


def hard_negatives(collection: Collection, chunks: list[StoredChunk], depth: int = 10) -> dict[str, list[StoredChunk]]:
    """For each chunk, its `depth` nearest chunks (stored vectors, cosine) from other sections: on
    topic, so a reader must check that a passage answers, not only that it is about the subject."""
    import numpy as np

    vectors = collection.vectors_by_vid([c.vid for c in chunks])
    section = [(c.source, c.heading or c.id) for c in chunks]
    out: dict[str, list[StoredChunk]] = {}
    keep = min(depth * 4 + 1, len(chunks))  # room for the chunk itself and its own section's
    for begin in range(0, len(chunks), 512):
        scores = vectors[begin:begin + 512] @ vectors.T
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]  # the nearest, unordered: no full sort
        nearest = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
        for row, order in enumerate(nearest):
            mine = section[begin + row]
            picked = [chunks[j] for j in order if section[j] != mine][:depth]
            out[chunks[begin + row].id] = picked
    return out


def _reader_row(fact: Fact, question: str, n: int, negatives: list[StoredChunk], rng: random.Random,
                passages: int, oracle_p: float) -> dict | None:
    """One reader example: `passages` numbered passages, the oracle among them or not."""
    clean = [c for c in negatives if fact.span not in c.text]  # a distractor that states the answer is no distractor
    with_oracle = rng.random() < oracle_p
    need = passages - 1 if with_oracle else passages
    if len(clean) < need:
        return None
    context = rng.sample(clean[: max(need, 2 * passages)], need)
    if with_oracle:
        context.insert(rng.randrange(len(context) + 1), fact.chunk)
        answer = f"{fact.answer} [{context.index(fact.chunk) + 1}]"
    else:
        answer = NO_ANSWER
    if rng.random() >= QUESTION_HEADINGS_KEPT:
        context = [_question_heading_out(c) for c in context]
    return {"id": f"{fact.id}-q{n}", "fact_id": fact.id, "question": question, "answer": answer,
            "span": fact.span if with_oracle else NO_ANSWER, "evidence": fact.span, "source": Path(fact.chunk.source).name,
            "oracle": with_oracle, "oracle_chunk": fact.chunk.id, "chunk_ids": [c.id for c in context],
            "messages": rag_messages(question, [_hit(c) for c in context]) + [{"role": "assistant", "content": answer}]}


def check_leakage(train: Iterable[dict], heldout: Iterable[dict]) -> None:
    """DataError if any held-out question (or, for cpt, held-out text) also appears in training."""
    key = lambda row: normalise_question(row.get("question") or row.get("text") or "")  # noqa: E731
    seen = {key(row) for row in train}
    leaked = [row.get("id") for row in heldout if key(row) in seen]
    if leaked:
        raise DataError(f"{len(leaked)} held-out examples also appear in training (first: {leaked[0]})")


def build_dataset(collection: Collection, out: Path, *, mode: str = "qa", paraphrases: int = 4,
                  heldout_fraction: float = 0.2, seed: int = 0, distractors: int = 3, oracle_p: float = 0.8,
                  exclude_questions: Iterable[str] = (), ask: Callable[[str], str] | None = None,
                  teacher_name: str = "", max_chunks: int | None = None) -> DataReport:
    """Write train.jsonl, heldout.jsonl and meta.json under `out` from the collection's chunks."""
    if mode not in DATA_MODES:
        raise ConfigError(f"mode must be one of {', '.join(DATA_MODES)}; got {mode!r}")
    if not 0 <= heldout_fraction < 1:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout_fraction!r}")
    if paraphrases < 1 or distractors < 0 or not 0 <= oracle_p <= 1:
        raise ConfigError("paraphrases must be >= 1, distractors >= 0 and oracle_p in [0, 1]")
    start = time.perf_counter()
    chunks = collection.all_chunks()[:max_chunks]
    if not chunks:
        raise DataError(f"collection '{collection.name}' holds no chunks: ingest documents first")
    rng = random.Random(seed)
    warnings: list[str] = []
    train, heldout, excluded, facts = [], [], 0, []
    if mode == "cpt":
        for chunk in chunks:
            row = {"id": chunk.id, "text": chunk.text, "source": Path(chunk.source).name, "chunk_ids": [chunk.id]}
            (heldout if rng.random() < heldout_fraction else train).append(row)
        if train and not heldout and heldout_fraction > 0 and len(train) > 1:
            heldout.append(train.pop())
    else:
        facts = teacher_facts(chunks, paraphrases, ask, warnings) if ask else offline_facts(chunks, paraphrases)
        negatives = {}
        if mode == "reader":
            facts = heading_facts(chunks) + facts
            negatives = hard_negatives(collection, chunks)
        if not facts:
            raise DataError(f"no fact-bearing sentences found in collection '{collection.name}'")
        banned = {normalise_question(q) for q in exclude_questions}
        # exactly round(fraction x facts) facts lend one phrasing to the held-out split
        held = set(rng.sample(range(len(facts)), round(heldout_fraction * len(facts))))
        seen: set[str] = set()  # a teacher may ask the same question about two facts: keep the first
        for number, fact in enumerate(facts):
            phrasings = [q for q in fact.questions if normalise_question(q) not in banned]
            excluded += len(fact.questions) - len(phrasings)
            phrasings = [q for q in phrasings if not (normalise_question(q) in seen or seen.add(normalise_question(q)))]
            if not phrasings:
                continue
            # a reader example is about using passages, not a fact, so a one-phrasing fact can be held out whole
            hold = (len(phrasings) > 1 or mode == "reader") and number in held
            for n, question in enumerate(phrasings):
                if mode == "reader":
                    row = _reader_row(fact, question, n, negatives[fact.chunk.id], rng, distractors + 1, oracle_p)
                else:
                    row = _qa_row(fact, question, n, mode, chunks, rng, distractors, oracle_p)
                if row is not None:
                    (heldout if hold and n == len(phrasings) - 1 else train).append(row)
    check_leakage(train, heldout)
    if not train:
        raise DataError("no training examples were produced")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {name: _write_jsonl(out / name, rows) for name, rows in ((TRAIN_FILE, train), (HELDOUT_FILE, heldout))}
    generator = f"teacher:{teacher_name}" if ask else "offline"
    meta = {"collection": collection.name, "mode": mode, "generator": generator, "paraphrases": paraphrases,
            "heldout_fraction": heldout_fraction, "seed": seed, "distractors": distractors, "oracle_p": oracle_p,
            "counts": {"facts": len(facts), "train": len(train), "heldout": len(heldout), "excluded": excluded,
                       "chunks": len(chunks)},
            "sha256": hashes, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "warnings": warnings}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return DataReport(out, mode, generator, len(facts), len(train), len(heldout), excluded, len(chunks),
                      time.perf_counter() - start, warnings)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_dataset(folder: Path) -> tuple[list[dict], list[dict], dict]:
    """(train rows, held-out rows, meta) of a folder written by `build_dataset`; checks for leakage."""
    folder = Path(folder)
    rows: dict[str, list[dict]] = {}
    for name in (TRAIN_FILE, HELDOUT_FILE):
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: missing (make the data with: rag finetune-data --collection C --out {folder})")
        rows[name] = []
        try:
            parsed = read_jsonl(path)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        for number, row in parsed:
            if not isinstance(row, dict) or not ("messages" in row or "text" in row):
                raise DataError(f"{path}:{number}: expected an object with 'messages' or 'text'")
            rows[name].append(row)
    if not rows[TRAIN_FILE]:
        raise DataError(f"{folder / TRAIN_FILE}: no training examples")
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    check_leakage(rows[TRAIN_FILE], rows[HELDOUT_FILE])
    return rows[TRAIN_FILE], rows[HELDOUT_FILE], meta
