"""Answering: retrieve, gate, build the prompt, generate, then attribute; with timings and sources.

Answer modes (ANSWER_MODES): "base" (the model alone), "rag" (retrieved context, cited answer),
"lora" and "lora+rag" (the same with the LoRA adapter, which the caller's generator carries). Earlier
turns of a conversation go to the model within its context window, and a follow-up is retrieved
with as a standalone question (rag/conversation.py). In the retrieval modes the model is wrapped in
what a small model cannot be trusted to do by itself:
- a confidence gate before generation: when the best passage's cosine to the question is below
  the collection's calibrated threshold, the answer is the no-answer sentence and the passages are
  shown as related, without calling the model;
- a loop guard while it generates (rag/loops.py): repetition stops the model and is cut;
- attribution after it (rag/attribution.py): each sentence gets the [n] of the passage that
  supports it, or is marked unsupported; an answer mostly unsupported is replaced by the passage
  sentence that best answers the question, labelled as a quote (`fallback`).
It wires the retriever, prompts, generator and these guards together and does nothing else.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Iterator

from rag.attribution import Attribution, Attributor, Citation, Span, addresses, coverage
from rag.conversation import fit_history, keyword_rewrite, model_rewrite
from rag.errors import ConfigError
from rag.generator import Generator
from rag.loops import LoopGuard, scaffold_echo, trim
from rag.modes import ANSWER_MODES, AnswerMode
from rag.prompts import NO_ANSWER, base_messages, is_abstention, rag_messages
from rag.retriever import Hit, Retriever

HOLD_BACK_WORDS = 16  # streamed text trails the model by this much, so a loop is cut before it is shown
FALLBACK_BELOW = 0.5  # share of supported sentences under which the answer is replaced by a quote
KINDS = ("answer", "quote", "abstained")
REWRITES = ("keywords", "model", "off")


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Hit]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was done to the model's text, and why
    messages: list[dict] = field(default_factory=list, repr=False)  # exactly what the model was sent
    # "answer": the model's text (cited); "quote": a passage sentence shown instead of an unsupported
    # answer; "abstained": the gate or the model said the documents do not answer it.
    kind: str = "answer"
    citations: list[Citation] = field(default_factory=list)
    highlights: dict[int, Span] = field(default_factory=dict)  # source number -> its supporting sentence
    model_answer: str = ""  # the model's own text before citations or a fallback changed it
    gated: bool = False  # the gate abstained before calling the model
    query: str = ""  # what was retrieved with: the question, or its standalone rewrite

    @property
    def low_confidence(self) -> bool:
        """No answer was given (the gate, or an unsupported answer on passages that do not cover the
        question), the answer fell back to a quote, or most sentences are unsupported."""
        unsupported = sum(not c.supported for c in self.citations)
        return self.kind in ("quote", "abstained") or (bool(self.citations) and unsupported * 2 > len(self.citations))

    def as_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "query": self.query,
            "kind": self.kind,
            "sources": [{**hit.as_dict(), "highlight": _span(self.highlights.get(n))}
                        for n, hit in enumerate(self.sources, start=1)],
            "citations": [c.as_dict() for c in self.citations],
            "low_confidence": self.low_confidence,
            "timings": {key: round(value, 4) for key, value in self.timings.items()},
            "notes": self.notes,
        }


def _span(span: Span | None) -> list[int] | None:
    return None if span is None else [span.start, span.end]


@dataclass
class Prepared:
    """What goes to the model for one question: its messages and the passages they hold."""

    messages: list[dict]
    hits: list[Hit]
    retrieve_s: float
    query: str  # what was retrieved with: the question, or its standalone rewrite
    notes: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # seconds: the search's stages (embed_s ...), prompt_s


def answer_mode(name: str) -> AnswerMode:
    try:
        return ANSWER_MODES[name]
    except KeyError:
        raise ConfigError(f"mode must be one of {', '.join(ANSWER_MODES)}; got {name!r}") from None


class Assistant:
    """`abstain_threshold`: None (no gate), a number (the minimum cosine of the best passage), or
    "auto" (the threshold `rag tune` recorded in the collection, none if it recorded none).
    `rewrite`: how a follow-up becomes a standalone query: "keywords" (no model call), "model"
    (the generator rewrites it; right for a served model) or "off". `context_window`: the model's
    maximum tokens, prompt and answer together; the oldest turns are dropped to stay inside it.
    `min_coverage`: the share of the question's key terms that must occur in some passage, else the
    gate abstains (0: no such check)."""

    def __init__(self, generator: Generator, retriever: Retriever | None = None, *, k: int = 4,
                 retrieval_mode: str = "auto", max_tokens: int = 200, temperature: float = 0.0,
                 abstain_threshold: float | str | None = "auto", fallback: bool = True, attribute: bool = True,
                 rewrite: str = "keywords", context_window: int = 2048, min_coverage: float = 0.0):
        self.generator = generator
        self.retriever = retriever
        self.k = k
        self.retrieval_mode = retrieval_mode
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.abstain_threshold = abstain_threshold
        self.fallback = fallback
        self.attributor = Attributor(retriever.embedder) if retriever is not None and attribute else None
        if rewrite not in REWRITES:
            raise ConfigError(f"rewrite must be one of {', '.join(REWRITES)}; got {rewrite!r}")
        self.rewrite = rewrite
        self.context_window = context_window
        self.min_coverage = min_coverage

    def threshold(self) -> float | None:
        if self.abstain_threshold in (None, "off"):
            return None
        if self.abstain_threshold == "auto":
            recorded = self.retriever.collection.get_meta("abstain_threshold") if self.retriever else None
            return float(recorded) if recorded else None
        return float(self.abstain_threshold)

    def standalone(self, question: str, history: list[dict] | None) -> str:
        if not history or self.rewrite == "off":
            return question.strip()
        if self.rewrite == "model":
            return model_rewrite(self.generator, question, history)
        return keyword_rewrite(question, history)

    def prepare(self, question: str, mode: str = "rag", history: list[dict] | None = None) -> Prepared:
        """Messages and sources for a question (after earlier turns `history`), and the seconds
        retrieval took."""
        if not question or not question.strip():
            raise ConfigError("question is empty")
        history = history or []
        if not answer_mode(mode).retrieval:
            start = time.perf_counter()
            messages, notes = self._fit(lambda turns: base_messages(question, turns), history)
            return Prepared(messages, [], 0.0, question.strip(), notes, {"prompt_s": time.perf_counter() - start})
        if self.retriever is None:
            raise ConfigError(f"mode {mode!r} needs a collection to retrieve from")
        start = time.perf_counter()
        query = self.standalone(question, history)
        stages: dict[str, float] = {}
        hits = self.retriever.search(query, k=self.k, mode=self.retrieval_mode, timings=stages)
        retrieve_s = time.perf_counter() - start
        messages, notes = self._fit(lambda turns: rag_messages(question, hits, turns), history)
        if count_tokens(self.generator, messages) > self.context_window - self.max_tokens:
            while len(hits) > 1 and count_tokens(self.generator, messages) > self.context_window - self.max_tokens:
                hits = hits[:-1]
                messages = rag_messages(question, hits, [])
            notes.append(f"only {len(hits)} passage(s) fit the model's context window of {self.context_window} tokens")
        stages["prompt_s"] = time.perf_counter() - start - retrieve_s
        return Prepared(messages, hits, retrieve_s, query, notes, stages)

    def _fit(self, build, history: list[dict]) -> tuple[list[dict], list[str]]:
        budget = self.context_window - self.max_tokens
        turns, dropped = fit_history(history, build, lambda m: count_tokens(self.generator, m), budget)
        notes = [f"the {dropped} oldest turn(s) of the conversation were left out to fit the model's context "
                 f"window of {self.context_window} tokens"] if dropped else []
        return build(turns), notes

    def ask(self, question: str, mode: str = "rag", history: list[dict] | None = None,
            prepared: Prepared | None = None) -> Answer:
        """`prepared`: this question's `prepare()`, when the caller already has it (no second retrieval)."""
        stream = self.ask_stream(question, mode, history, prepared)
        for _ in stream:
            pass
        assert stream.answer is not None
        return stream.answer

    def ask_stream(self, question: str, mode: str = "rag", history: list[dict] | None = None,
                   prepared: Prepared | None = None) -> "AnswerStream":
        prepared = prepared or self.prepare(question, mode, history)
        gate = self.gate(prepared) if answer_mode(mode).retrieval else None
        return AnswerStream(self, question, mode, prepared, gate=gate)

    def gate(self, prepared: Prepared) -> str | None:
        """Why the evidence is too weak to ask the model, or None to go ahead: the best passage's
        cosine is under the threshold, or too few of the question's key terms occur in any passage."""
        threshold = self.threshold()
        best = max((h.dense for h in prepared.hits), default=-1.0)
        if threshold is not None and best < threshold:
            return (f"no passage is close enough to the question (best cosine {best:.2f} < threshold "
                    f"{threshold:.2f}); the passages are related, but not an answer")
        covered = coverage(prepared.query, prepared.hits)
        if self.min_coverage and covered < self.min_coverage:
            return (f"the passages do not mention enough of what the question asks about ({covered:.0%} of its key "
                    f"terms, under {self.min_coverage:.0%}); they are related, but not an answer")
        return None


def count_tokens(generator: Generator, messages: list[dict]) -> int:
    """Prompt tokens by the model's own tokenizer where the generator has one (in-process);
    otherwise a cautious estimate of one token per three characters."""
    tokenizer = getattr(generator, "tokenizer", None)
    if tokenizer is not None:
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    return sum(len(m["content"]) for m in messages) // 3 + 8 * len(messages)


class AnswerStream:
    """Iterate for the answer's text pieces; `.sources` is known before the first piece and
    `.answer` (with timings, citations and notes) once iteration ends.

    The pieces trail the model by HOLD_BACK_WORDS words: when the model starts to loop, generation
    stops and the answer is cut where the repetition began, usually before any of it was shown.
    `.answer.answer` is the final text, with citations added or replaced by a quote; a caller
    that streamed the pieces shows it in their place once the stream ends."""

    def __init__(self, assistant: Assistant, question: str, mode: str, prepared: Prepared, *, gate: str | None = None):
        self._assistant = assistant
        self.question = question
        self.mode = mode
        self.messages = prepared.messages
        self.sources = prepared.hits
        self.query = prepared.query  # shown with the sources when it differs from the question
        self._notes = prepared.notes
        self.gated = gate is not None
        self._gate = gate  # why the gate abstained
        self._retrieve_s = prepared.retrieve_s
        self._stages = prepared.stages
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        notes: list[str] = list(self._notes)
        if self._gate is not None:
            notes.append(self._gate)
            text, first = NO_ANSWER, 0.0
            yield text
        else:
            text, first = yield from self._generate(notes)
        generate_s = time.perf_counter() - start
        prompt_s = self._stages.get("prompt_s", 0.0)
        timings = {"retrieve_s": self._retrieve_s, **self._stages, "first_token_s": first or generate_s,
                   "generate_s": generate_s, "attribute_s": 0.0, "total_s": self._retrieve_s + prompt_s + generate_s}
        answer = Answer(self.question, text.strip(), self.sources, self.mode, timings, notes, self.messages,
                        model_answer=text.strip(), gated=self.gated, query=self.query)
        if self.gated or is_abstention(answer.answer):
            answer.kind = "abstained"
        elif answer_mode(self.mode).retrieval and self.sources:
            start = time.perf_counter()
            self.attribute(answer)
            timings["attribute_s"] = time.perf_counter() - start  # after the last token: citations, fallback
            timings["total_s"] += timings["attribute_s"]
        self.answer = answer

    def _generate(self, notes: list[str]) -> Iterator[str]:
        """Stream the model's text through the loop guard and the hold-back; returns (text, first_s)."""
        a = self._assistant
        guard = LoopGuard(" ".join(m["content"] for m in self.messages))
        start = time.perf_counter()
        first = None
        text, shown = "", 0
        pieces = a.generator.stream(self.messages, max_tokens=a.max_tokens, temperature=a.temperature)
        try:
            for piece in pieces:
                if first is None:
                    first = time.perf_counter() - start
                text += piece
                loop = guard.check(text)
                if loop is not None:
                    text = trim(text, loop)
                    notes.append(f"the model repeated itself ({loop.ngram!r}); the answer was cut there")
                    break
                echo = scaffold_echo(text)
                if echo is not None:
                    text = text[:echo].rstrip()
                    notes.append("the model began to echo its prompt; the answer was cut there")
                    break
                safe = _hold_back(text, HOLD_BACK_WORDS)
                if safe > shown:
                    yield text[shown:safe]
                    shown = safe
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # stops the model: a local generation thread or the server's request
        if len(text) > shown:
            yield text[shown:]
        return text, first

    def attribute(self, answer: Answer) -> None:
        """Add citations to a finished RAG answer. A mostly unsupported one is replaced: by the passage
        sentence that best answers the question, quoted, when the passages mention everything the
        question asks about; otherwise by the no-answer sentence (the passages are only related)."""
        attributor = self._assistant.attributor
        if attributor is None:
            return
        found: Attribution = attributor.attribute(answer.answer, self.sources, self.question)
        answer.answer, answer.citations, answer.highlights = found.answer, found.citations, found.highlights
        if not self._assistant.fallback:
            return
        cited = {n for c in found.citations if c.supported for n in c.passages}
        on_point = addresses(self.question, found.answer, self.sources, cited)
        if found.supported_share >= FALLBACK_BELOW and on_point:  # an empty answer falls back
            return
        why = "was not supported by the passages" if on_point else "did not speak to what the question asks"
        covered = coverage(self.query, self.sources)
        quote = attributor.best_quote(self.question, self.sources) if covered >= 1.0 else None
        if quote is None:
            answer.answer, answer.kind, answer.highlights = NO_ANSWER, "abstained", {}
            lacking = (f"the passages mention only {covered:.0%} of what the question asks about" if covered < 1.0
                       else "no passage sentence answers it")
            answer.notes.append(f"the model's answer {why}, and {lacking}; they are related, but not an answer")
            return
        number, span = quote
        sentence = " ".join(self.sources[number - 1].text[span.start:span.end].split())
        answer.answer = f'Quote from [{number}]: "{sentence}"'
        answer.kind = "quote"
        answer.highlights = {number: span}
        answer.notes.append(f"the model's answer {why}; the passage sentence that best answers the question "
                            "is quoted instead")


def _hold_back(text: str, words: int) -> int:
    """The character offset before the last `words` words of `text` (0 if it has fewer)."""
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    return starts[-words] if len(starts) >= words else 0
