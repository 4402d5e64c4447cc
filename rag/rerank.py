"""Reranking: a second stage that reads the question and each of the first stage's top passages
together and orders them again by its own relevance score.

- `CrossEncoderReranker`: any sentence-transformers `CrossEncoder`, by name or folder (e.g.
  cross-encoder/ms-marco-MiniLM-L6-v2 where the user has it); its `predict` score of each
  (question, passage) pair.
- `LLMReranker`: a `Generator` (the embedded model, or an OpenAI-compatible server such as vLLM)
  asked "is this passage relevant to the question? yes or no"; the score is the model's probability
  of "yes" against "no" for its first reply token, p(yes) / (p(yes) + p(no)). That is the pointwise
  convention of Qwen3-Reranker and of sentence-transformers' `LogitScore` (logit(yes) - logit(no));
  vLLM's /score and /rerank endpoints need a model served as a classifier, so a chat model is asked
  through its ordinary chat endpoint with `logprobs` instead (rag/generator.py).

`rerank` applies one to the first `depth` hits; `Retriever.search` calls it (rag/retriever.py), and
rag/components.py builds the reranker from Settings. It does not retrieve, and it does not combine
its score with the first stage's: the reranked hits carry the reranker's score only.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rag.errors import ConfigError

if TYPE_CHECKING:
    from rag.generator import Generator, Message
    from rag.retriever import Hit

# The instruction of the LLM reranker. The passage is untrusted text: it goes in the user turn only,
# where the generator's ControlTokens guard breaks any chat marker in it. Wording chosen on probes
# with SmolLM2-135M: "is the passage relevant" ranked the answering passage first in 5 of 6 toy
# questions; "does the passage answer the question" and Qwen3-Reranker's own wording in 2-3 of 6.
RELEVANCE_SYSTEM = "You judge whether a passage is relevant to a question. Answer only yes or no."
RELEVANCE_USER = "Question: {question}\nPassage: {passage}\nIs the passage relevant to the question? Answer yes or no."


class Reranker(Protocol):
    name: str

    def score(self, question: str, passages: list[str]) -> list[float]:
        """One relevance score per passage, higher is more relevant; comparable within one call."""
        ...


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder: `model` is a Hugging Face name (from the local cache
    when offline) or a folder. Scores are the model's `predict` output as the model configures it
    (ms-marco models: raw logits; others a sigmoid); for a model with several labels, the softmax
    probability of the last one (the "relevant" class of the usual two)."""

    def __init__(self, model: str, device: str = "auto", batch_size: int = 32, max_length: int | None = 512):
        from sentence_transformers import CrossEncoder

        from rag.embedding import pick_device

        self.name = model
        self.batch_size = batch_size
        try:
            self.model = CrossEncoder(model, device=pick_device(device), max_length=max_length)
        except (OSError, ValueError) as exc:  # a missing folder, a name not in the cache offline, no config
            where = "folder" if Path(model).expanduser().exists() else "model"
            raise ConfigError(f"cannot load the cross-encoder {where} {model!r} (rerank_model): {_first_line(exc)}; "
                              "give rerank_model a CrossEncoder folder (or a name in the local Hugging Face "
                              "cache), or set rerank to none") from None

    def score(self, question: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        scores = self.model.predict([(question, p) for p in passages], batch_size=self.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        scores = scores.reshape(len(passages), -1)  # (n, labels)
        if scores.shape[1] > 1:  # a classifier (e.g. not relevant / relevant): p(the last label)
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = scores / scores.sum(axis=1, keepdims=True)
        return [float(s) for s in scores[:, -1]]


class LLMReranker:
    """A generator's p(yes) for "is this passage relevant to the question?" (see the module docstring)."""

    def __init__(self, generator: Generator):
        self.generator = generator
        self.name = f"llm:{generator.name}"

    def score(self, question: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        return self.generator.yes_probability([relevance_messages(question, p) for p in passages])


def relevance_messages(question: str, passage: str) -> list[Message]:
    return [{"role": "system", "content": RELEVANCE_SYSTEM},
            {"role": "user", "content": RELEVANCE_USER.format(question=question, passage=passage)}]


def rerank(reranker: Reranker, question: str, hits: list[Hit], depth: int) -> list[Hit]:
    """The first `depth` hits ordered by the reranker's score (which becomes their `score`; every
    other field is kept), then the rest in their first-stage order with their first-stage scores.
    Ties keep the first stage's order."""
    if depth <= 0:
        raise ConfigError(f"rerank_depth must be positive, got {depth!r}")
    head, tail = hits[:depth], hits[depth:]
    scores = reranker.score(question, [passage_text(h) for h in head])
    if len(scores) != len(head):
        raise ValueError(f"the reranker {reranker.name} returned {len(scores)} scores for {len(head)} passages")
    order = sorted(range(len(head)), key=lambda i: -scores[i])  # sorted is stable
    return [dataclasses.replace(head[i], score=float(scores[i])) for i in order] + tail


def passage_text(hit: Hit) -> str:
    """What the reranker reads: the heading path, then the text, as the chunk was embedded
    (rag.chunking.indexed_text)."""
    return f"{hit.heading}\n{hit.text}" if hit.heading else hit.text


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
