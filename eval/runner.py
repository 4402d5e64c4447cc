"""Run every question through every arm (base, rag, lora, lora+rag) and record answers and rankings.

Each answer goes through the product's own Assistant (rag/answer.py), so the eval scores exactly
what a user is shown. Before asking, the runner builds the question's messages (retrieval included,
which is cheap) and looks the answer up in the cache by their hash (eval/answers.py): an interrupted
run resumes, and a changed prompt, passage, model or setting re-asks only what it changes. Also
here: the retrieval ranking per question and the chunks that hold each question's evidence. It does
not score, measure build or update costs (eval/costs.py) or report (eval/report.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eval.answers import ANSWERS_FILE, AnswerCache, Passage, Record, answer_key, postprocessing
from eval.config import LORA_ARMS, EvalConfig
from eval.results import KnowledgeUpdate
from rag.answer import Assistant, Prepared
from rag.components import make_assistant
from rag.errors import ConfigError
from rag.generator import Generator
from rag.jsonl import read_jsonl
from rag.retriever import Retriever
from rag.settings import Settings


@dataclass
class RunData:
    """Everything a run measured, before scoring."""

    questions: list[dict]
    records: list[Record]
    rankings: dict[str, list[Passage]] = field(default_factory=dict)  # qid -> best first, retrieval_k deep
    relevant: dict[str, list[str]] = field(default_factory=dict)  # qid -> ids of the chunks holding the evidence
    costs: dict = field(default_factory=dict)  # run-wide: index build, fine-tune, judge
    update: KnowledgeUpdate | None = None
    judged: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (qid, arm) -> judge_* scores


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


@dataclass
class Model:
    generator: Generator
    identity: dict  # what the answer cache knows it by (eval.answers.generator_identity)


class Arms:
    """The models and retriever behind the four arms, each arm asked through its own Assistant."""

    def __init__(self, retriever: Retriever | None, base: Model, tuned: Model | None, settings: Settings,
                 count_tokens: Callable[[list[dict] | str], int | None]):
        self.retriever = retriever
        self.base, self.tuned = base, tuned
        self.settings = settings
        self.count_tokens = count_tokens
        self._assistants: dict[str, tuple[Assistant, dict]] = {}

    def _assistant(self, arm: str) -> tuple[Assistant, dict]:
        """The arm's Assistant and the identity its answers are cached under."""
        if arm not in self._assistants:
            model = self.tuned if arm in LORA_ARMS else self.base
            if model is None:
                raise ConfigError(f"arm {arm!r} needs an adapter")
            assistant = make_assistant(self.settings, model.generator, self.retriever)
            self._assistants[arm] = (assistant, {**model.identity, "postprocessing": postprocessing(assistant)})
        return self._assistants[arm]

    def prepare(self, arm: str, row: dict) -> tuple[Prepared, str]:
        """This question's prompt in this arm and the key its answer is cached under: retrieves,
        does not generate."""
        assistant, identity = self._assistant(arm)
        prepared = assistant.prepare(row["question"], arm)
        return prepared, answer_key(prepared.messages, identity)

    def ask(self, arm: str, row: dict, prepared: Prepared | None = None) -> Record:
        assistant, identity = self._assistant(arm)
        answer = assistant.ask(row["question"], arm, prepared=prepared)
        return Record(row["id"], arm, row["question"], answer.answer, [Passage.from_hit(h) for h in answer.sources],
                      answer.timings["total_s"], self.count_tokens(answer.messages), self.count_tokens(answer.answer),
                      answer_key(answer.messages, identity))


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


def answer_all(config: EvalConfig, arms: Arms, questions: list[dict],
               progress: Callable = lambda items, **_: items) -> list[Record]:
    """Every question through every arm, reusing a cached answer wherever its key is unchanged."""
    records = []
    todo = [(row, arm) for row in questions for arm in config.arms]
    with AnswerCache(config.out / ANSWERS_FILE) as cache:
        for row, arm in progress(todo, desc="answers", unit="answer"):
            prepared, key = arms.prepare(arm, row)
            record = cache.get(row["id"], arm, key)
            if record is None:
                record = arms.ask(arm, row, prepared)
                cache.add(record)
            records.append(record)
    return records


def rankings(retriever: Retriever, questions: list[dict], depth: int, mode: str) -> dict[str, list[Passage]]:
    return {row["id"]: [Passage.from_hit(h) for h in retriever.search(row["question"], k=depth, mode=mode)]
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
