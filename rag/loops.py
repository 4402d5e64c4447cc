"""Loops: notice when a model starts repeating itself, so the answer stops and is trimmed.

A small model answering from long context often falls into a cycle ("of the island of the island
of ..."). `LoopGuard` watches the answer as it grows and reports a loop when an n-gram of the
answer's own words comes round again more often than the context passages themselves repeat it:
copying a phrase the documents repeat is not a loop, saying it again and again is. The answer is
cut where the repetition began. `scaffold_echo` finds where a model starts writing the prompt's own
layout (a passage header, the context markers, a new "Question:"), where the answer is cut too. It works on words of the decoded text, so it guards any generator
(in-process or a server) alike. It does not call a model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)

# (n-gram length, occurrences in the answer that make a loop, beyond the context's own count)
# a short phrase coming round a third time, or a long span said twice.
RULES = ((4, 3), (12, 2))


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


@dataclass
class Loop:
    cut: int  # character offset in the answer where the repetition began
    ngram: str  # the repeated words, for logs and tests


class LoopGuard:
    """Feed it the answer text as it grows (`check`); it returns a `Loop` once one appears."""

    def __init__(self, context: str = ""):
        tokens = [m.group().lower() for m in _words(context)]
        self._context = {n: _ngrams(tokens, n) for n, _ in RULES}

    def check(self, answer: str) -> Loop | None:
        matches = _words(answer)
        tokens = [m.group().lower() for m in matches]
        for n, times in RULES:
            seen: dict[tuple[str, ...], list[int]] = {}
            for i in range(len(tokens) - n + 1):
                gram = tuple(tokens[i:i + n])
                starts = seen.setdefault(gram, [])
                starts.append(i)
                if len(starts) >= max(times, self._context[n][gram] + 1):
                    return Loop(cut=matches[starts[1]].start(), ngram=" ".join(gram))
        return None


# A sentence's end: its stop, any citation markers after it ("... 1887. [1]"), then a space.
_SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s)")


def trim(answer: str, loop: Loop) -> str:
    """The answer up to where the repetition began, without a dangling separator; and without the
    sentence the cut leaves unfinished when a finished one comes before it ("... command [3]. The":
    the repetition began inside that sentence, whose first words only echo the one said before)."""
    kept = answer[: loop.cut].rstrip(" ,;:-–—\n\t")
    ends = list(_SENTENCE_END.finditer(kept + " "))
    if ends and ends[-1].end() < len(kept):
        kept = kept[: ends[-1].end()]
    return kept


# The prompt's own scaffolding (rag/prompts.py): a model that starts writing a passage header, the
# context markers or a new "Question:" has stopped answering and is echoing its prompt.
_SCAFFOLD = re.compile(r"(?:^|\n)\s*\[\d+\]\s*\(|<<<CONTEXT|CONTEXT>>>|(?:^|\n)\s*Question:|\n\s*Answer:")


def scaffold_echo(answer: str) -> int | None:
    """Where the answer starts echoing the prompt's scaffolding, or None."""
    match = _SCAFFOLD.search(answer)
    return match.start() if match else None


def is_looping(answer: str, context: str = "") -> bool:
    return LoopGuard(context).check(answer) is not None
