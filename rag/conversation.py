"""Conversation: turn a follow-up into a standalone question, and fit the turns to the model's window.

"And when was it automated?" retrieves nothing useful on its own. Before retrieval a follow-up is
rewritten:
- `keyword_rewrite` (the embedded default, no model call): when the follow-up leans on the
  conversation (a pronoun or a leading "and"/"what about", or only a few content words), the
  previous question's key terms that it lacks are appended;
- `model_rewrite` (a served model): the model is asked for the standalone question; a reply that
  is empty, overlong or a refusal falls back to the keyword rewrite.
`fit_history` drops the oldest turns until the prompt fits the context window. It does not
retrieve; it calls a model only in `model_rewrite`.
"""

from __future__ import annotations

import re
from typing import Callable

from rag.generator import GenerationError, Generator
from rag.prompts import Message, is_abstention, rewrite_messages

_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*|\d+(?:\.\d+)*")
_REFERRING = frozenset("it its it's they them their theirs this that these those he him his she her hers there".split())
_LEADS = ("and ", "but ", "also ", "what about ", "how about ", "and what", "so ")
_QUESTION_WORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as into about over under than is are was
    were be been being am do does did have has had it its this that these those there here which who whom whose
    what when where why how i you he she we they me him her us them my your his our their not no yes can could
    will would shall should may might must just also very only much many long often about tell me please""".split()
)
SHORT = 3  # a follow-up with at most this many content words leans on the conversation


def _content(text: str) -> list[str]:
    return [w for w in _WORD.findall(text) if w.lower() not in _QUESTION_WORDS]


def previous_question(history: list[Message]) -> str | None:
    return next((m["content"] for m in reversed(history) if m.get("role") == "user"), None)


def is_follow_up(question: str) -> bool:
    words = [w.lower() for w in _WORD.findall(question)]
    lowered = " ".join(words) + " "
    return (any(w in _REFERRING for w in words) or lowered.startswith(_LEADS)
            or len(_content(question)) <= SHORT)


def keyword_rewrite(question: str, history: list[Message]) -> str:
    """The follow-up plus the previous question's key terms it lacks; unchanged when it stands alone."""
    previous = previous_question(history)
    if not previous or not is_follow_up(question):
        return question.strip()
    have = {w.lower() for w in _WORD.findall(question)}
    added = []
    for word in _content(previous):
        if word.lower() not in have:
            have.add(word.lower())
            added.append(word)
    return f"{question.strip()} ({' '.join(added)})" if added else question.strip()


def model_rewrite(generator: Generator, question: str, history: list[Message]) -> str:
    if not previous_question(history):
        return question.strip()
    try:
        reply = generator.generate(rewrite_messages(question, history), max_tokens=60, temperature=0.0)
    except GenerationError:
        return keyword_rewrite(question, history)
    reply = " ".join(reply.strip().strip('"').split())
    if not reply or is_abstention(reply) or len(reply) > 4 * len(question) + 200:
        return keyword_rewrite(question, history)
    return reply


def fit_history(history: list[Message], build: Callable[[list[Message]], list[Message]],
                count: Callable[[list[Message]], int], budget: int) -> tuple[list[Message], int]:
    """The most recent turns whose prompt (`build(turns)`) fits in `budget` tokens, and how many
    of the oldest turns were dropped (a user turn and its answer leave together)."""
    turns = [m for m in history if m.get("role") in ("user", "assistant")]
    dropped = 0
    while turns and count(build(turns)) > budget:
        cut = 2 if len(turns) > 1 and turns[0]["role"] == "user" and turns[1]["role"] == "assistant" else 1
        turns = turns[cut:]
        dropped += cut
    return turns, dropped
