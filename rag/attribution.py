"""Attribution: which passage supports each sentence of an answer, after the model has written it.

A small model rarely cites, and a larger one cites wrongly now and then, so citations are not
left to the model. Each answer sentence is scored against each retrieved passage by
  support = SEMANTIC_WEIGHT * (best cosine between the sentence and one sentence of the passage)
          + (1 - SEMANTIC_WEIGHT) * (share of the sentence's new content words found in the passage),
where "new" leaves out the words of the question: echoing the question is no evidence (the lexical
share of a sentence that only echoes it is 0);
the passage with the best support is cited as [n] where the model cited nothing (or cited only
passages that do not support the sentence, when one does). A number the model gave to a passage
that does not support its sentence is removed, so every [n] shown backs its sentence, and a sentence
that no passage supports (support < SUPPORTED) is marked unsupported. The passage sentence that
matched best is kept as the highlight to show inside each source. When the whole answer is
unsupported, `best_quote` offers the passage sentence that best answers the question instead.
It does not retrieve or call a language model; it uses the collection's embedder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from rag.embedding import Embedder
from rag.headings import SEPARATOR
from rag.retriever import Hit

SEMANTIC_WEIGHT = 0.5
SUPPORTED = 0.5  # support at or above this counts as backed by the passage
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-*•]|\s*\d+[.)] )")
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_CITATION_MARK = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")  # a citation with the space before it
_LEADING_CITATIONS = re.compile(r"(?:\[\d+(?:\s*,\s*\d+)*\][.,;:]?\s*)+")
WORD = re.compile(r"\d+(?:\.\d+)*|[^\W_]+")  # a word or a number; numbers keep their decimal points: 2.4
# Words any passage contains, left out when a sentence's words are matched against a passage (and by
# the eval's faithfulness and evidence overlap, eval/metrics.py).
STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as into about over under than is are
    was were be been being am do does did doing have has had having it its this that these those there here
    which who whom whose what when where why how i you he she we they me him her us them my your his our
    their not no yes can could will would shall should may might must just also very only s t""".split()
)


@dataclass
class Span:
    start: int
    end: int


@dataclass
class Citation:
    sentence: str  # as shown, with the markers as attribution left them
    passages: list[int]  # 1-based numbers of the passages cited for it (the model's, else ours)
    support: float  # the best passage's support, 0..1
    supported: bool
    added: bool = False  # True when the model cited nothing and the number was added here
    replaced: bool = False  # True when the model's citation supported nothing and the best passage's replaced it
    dropped: list[int] = field(default_factory=list)  # the model's numbers removed: those passages back nothing here

    def as_dict(self) -> dict:
        return {"sentence": self.sentence, "passages": self.passages, "support": round(self.support, 4),
                "supported": self.supported}


@dataclass
class Attribution:
    answer: str  # the answer with [n] added where the model cited nothing
    citations: list[Citation]
    highlights: dict[int, Span] = field(default_factory=dict)  # passage number -> its supporting sentence

    @property
    def supported_share(self) -> float:
        return sum(c.supported for c in self.citations) / len(self.citations) if self.citations else 0.0


def sentences(text: str) -> list[Span]:
    """Sentence spans of `text` (ends at . ! ? before a capital or digit, blank lines, list items)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if text[start:match.start()].strip():
            spans.append(_strip(text, start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append(_strip(text, start, len(text)))
    # citation markers after a full stop ("... island. [1] The tower ...", as models often cite) belong
    # to the sentence before them: alone they are no sentence a passage could support
    merged: list[Span] = []
    for span in spans:
        lead = _LEADING_CITATIONS.match(text, span.start, span.end) if merged else None
        if lead:
            merged[-1] = _strip(text, merged[-1].start, lead.end())
            span = _strip(text, lead.end(), span.end)
        if span.end > span.start:
            merged.append(span)
    return merged


def _after_title(text: str, span: Span, title: str) -> Span:
    """`span` without a first line that is the section's title: a PDF sets a heading on its own line
    with no full stop after it, so it runs into the sentence below ("Hibernation\nAlpine marmots ...")."""
    first, newline, _ = text[span.start:span.end].partition("\n")
    if title and newline and " ".join(first.split()).lower() == " ".join(title.split()).lower():
        return _strip(text, span.start + len(first) + 1, span.end)
    return span


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Span(start, end)


def content_words(text: str) -> set[str]:
    return {w for w in WORD.findall(_CITATION.sub(" ", text).lower()) if w not in STOPWORDS}


# Words that carry the question's form, not its subject: their absence from a passage says nothing.
_QUESTION_FORM = frozenset(
    """how what which who whom when where why many much long often does do did is are was were can could
    would should will shall may might must tell give name list describe explain mean means happen happens
    typical usually kind type get gets got make makes made lead leads led need needs want wants take takes
    go goes come comes""".split()
)


def _stem(word: str) -> str:
    """A light suffix strip, so "joins" meets "join" and "warns" meets "warn"."""
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _stems(text: str) -> set[str]:
    """The stemmed content words of `text`."""
    return {_stem(w) for w in content_words(text)}


def key_terms(question: str) -> set[str]:
    """The question's subject words, stemmed: its content words without the words of its form."""
    return {_stem(w) for w in content_words(question) if w not in _QUESTION_FORM}


def coverage(question: str, hits: Sequence[Hit]) -> float:
    """Share of the question's key terms that occur in at least one passage (1.0 when it has none).
    A question about something the documents never mention ("the gift shop's Sunday hours") leaves
    its key terms uncovered, however close the passages are in meaning."""
    terms = key_terms(question)
    if not terms:
        return 1.0
    found = set().union(*(_stems(h.text) for h in hits)) if hits else set()
    return len(terms & found) / len(terms)


def addresses(question: str, answer: str, hits: Sequence[Hit], cited: Iterable[int] = ()) -> bool:
    """Whether `answer` speaks to what `question` singles out. The passages it cites (`cited`, 1-based)
    must name every key term of the question that any passage names: "20 to 45 milligrams [1]", citing
    a passage about green tea, does not answer "How much caffeine is in oolong tea?" when another passage
    mentions oolong. Then a quantity question needs a number; any other question, one of its key terms
    that not every passage shares, in the answer or in the heading path of a passage it cites. Under
    passages that all say "Tidy T3", "Which Wi-Fi networks can the Tidy T3 join?" is about Wi-Fi networks
    and joining, and "The Tidy T3 is a fictional product." does not answer it; "There are several
    advantages." does answer "Why are Python strings immutable?" when it cites the section of that title."""
    terms = key_terms(question)
    named = [_stems(f"{h.heading} {h.text}") for h in hits]
    cited = [n for n in cited if 1 <= n <= len(hits)]
    if cited and not terms & set().union(*named) <= set().union(*(named[n - 1] for n in cited)):
        return False
    if _QUANTITY_QUESTION.search(question):
        return bool(_NUMBER.search(_CITATION.sub(" ", answer)))
    if not terms or not hits:
        return True
    said = _stems(answer).union(*(_stems(hits[n - 1].heading) for n in cited))
    return bool((terms - set.intersection(*named) or terms) & said)


def cited_numbers(text: str) -> list[int]:
    return [int(n) for group in _CITATION.findall(text) for n in group.split(",")]


class Attributor:
    def __init__(self, embedder: Embedder):
        self.embedder = embedder

    def attribute(self, answer: str, hits: Sequence[Hit], question: str = "") -> Attribution:
        spans = sentences(answer)
        if not spans or not hits:
            return Attribution(answer, [])
        claims = [answer[s.start:s.end] for s in spans]
        support, best_sentence, passage_spans = self._support(claims, hits, content_words(question))
        citations: list[Citation] = []
        highlights: dict[int, Span] = {}
        pieces, cursor = [], 0
        for i, (span, claim) in enumerate(zip(spans, claims)):
            best = int(np.argmax(support[i]))
            cited = [n for n in cited_numbers(claim) if 1 <= n <= len(hits)]
            backing = [n for n in cited if support[i][n - 1] >= SUPPORTED]
            score = float(support[i][best])
            supported = score >= SUPPORTED
            added = not cited and supported
            # the model cited passages that do not support the sentence, and another one does
            replaced = bool(cited) and supported and not backing
            # a number that backs nothing is not shown as a source: the others stay, or the sentence
            # is left unsupported without a marker when no passage backs it
            dropped = [n for n in cited if n not in backing] if not replaced else []
            if added or replaced or dropped:
                cited = [best + 1] if added or replaced else backing
                claim = _with_marker(claim if added else _CITATION_MARK.sub("", claim), cited)
                pieces += [answer[cursor:span.start], claim]
                cursor = span.end
            for n in cited:  # every number left backs the sentence
                if n not in highlights:
                    highlights[n] = passage_spans[n - 1][best_sentence[i][n - 1]]
            citations.append(Citation(claim, cited, score, supported, added, replaced, dropped))
        pieces.append(answer[cursor:])
        return Attribution("".join(pieces), citations, highlights)

    def _support(self, claims: list[str], hits: Sequence[Hit], asked: set[str]):
        """(claims x passages) support, the index of each passage's best sentence per claim, and the
        sentence spans of each passage."""
        passage_spans = [sentences(h.text) or [Span(0, len(h.text))] for h in hits]
        passage_sentences = [h.text[s.start:s.end] for h, spans in zip(hits, passage_spans) for s in spans]
        vectors = self.embedder.embed(claims + passage_sentences)  # (claims + sentences, dim), unit rows
        claim_vectors, sentence_vectors = vectors[: len(claims)], vectors[len(claims):]
        cosines = claim_vectors @ sentence_vectors.T  # (claims, all passage sentences)
        support = np.zeros((len(claims), len(hits)), dtype=np.float32)
        best_sentence = np.zeros((len(claims), len(hits)), dtype=np.int64)
        passage_words = [content_words(h.text) for h in hits]
        offset = 0
        for p, spans in enumerate(passage_spans):
            block = cosines[:, offset: offset + len(spans)]
            best_sentence[:, p] = block.argmax(axis=1)
            semantic = block.max(axis=1)
            for c, claim in enumerate(claims):
                words = content_words(claim) - asked
                lexical = len(words & passage_words[p]) / len(words) if words else 0.0
                support[c, p] = SEMANTIC_WEIGHT * max(0.0, float(semantic[c])) + (1 - SEMANTIC_WEIGHT) * lexical
            offset += len(spans)
        return support, best_sentence, passage_spans

    def best_quote(self, question: str, hits: Sequence[Hit]) -> tuple[int, Span] | None:
        """(passage number, sentence span) of the passage sentence that best answers `question`:
        cosine to the question plus its share of the question's key terms; None when no sentence can
        stand as an answer. The share counts the key terms that the passage's heading path does not
        already hold (under "Lighthouse > History", "How tall is the lighthouse tower?" is about "tall"
        and "tower"). A candidate must say something the question does not (a heading that
        repeats the question is no answer); it must come from a passage that mentions every key term
        of the question, counting the passage's heading path (a passage about green tea's caffeine does
        not answer a question about oolong's; an answer sentence often leaves its subject to the
        sentences before it: "Adults weigh ..."); and when the question asks for a quantity ("how
        many", "how long", "what year"), it must hold a number."""
        terms = key_terms(question)
        wants_number = bool(_QUANTITY_QUESTION.search(question))
        candidates, focus = [], []  # focus: the key terms its heading path leaves to the sentence
        for n, hit in enumerate(hits, start=1):
            topic = _stems(hit.heading)
            if not terms <= topic | _stems(hit.text):
                continue
            title = hit.heading.rsplit(SEPARATOR, 1)[-1]
            for span in sentences(hit.text):
                span = _after_title(hit.text, span, title)
                text = hit.text[span.start:span.end]
                words = _stems(text)
                if (len(text.split()) >= 4 and not text.rstrip().endswith("?") and len(words - terms) >= 2
                        and (not wants_number or _NUMBER.search(text))):
                    candidates.append((n, span))
                    focus.append((terms - topic or terms, words))
        if not candidates:
            return None
        texts = [hits[n - 1].text[s.start:s.end] for n, s in candidates]
        vectors = self.embedder.embed([question] + texts)
        cosines = vectors[1:] @ vectors[0]
        scores = [SEMANTIC_WEIGHT * float(cos) + (1 - SEMANTIC_WEIGHT) * len(wanted & words) / max(1, len(wanted))
                  for cos, (wanted, words) in zip(cosines, focus)]
        return candidates[int(np.argmax(scores))]


# Questions whose answer is a quantity, a duration or a date: a sentence without a number does not answer them.
_QUANTITY_QUESTION = re.compile(
    r"\bhow\s+(?:many|much|old|tall|far|high|heavy|big|large|long|wide|deep|loud|fast|hot|cold|warm)\b|"
    r"\b(?:what|which)\s+(?:\w+\s+)?(?:year|temperature|percentage|size|weight|height|length|depth|distance|age|price|"
    r"speed|voltage|capacity|number)\b|\bin\s+which\s+year\b", re.IGNORECASE)
_NUMBER = re.compile(  # "T3" and "[2]" are names and citations, not numbers
    r"\b\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    r"hundred|thousand|million|billion|dozen|half|once|twice|single|double)\b", re.IGNORECASE)


def _with_marker(sentence: str, numbers: list[int]) -> str:
    """'It was lit in 1887.' -> 'It was lit in 1887 [1].'; no numbers: the sentence as it is."""
    stripped = sentence.rstrip()
    if not numbers:
        return stripped
    marker = f"[{', '.join(map(str, numbers))}]"
    if stripped and stripped[-1] in ".!?":
        return f"{stripped[:-1]} {marker}{stripped[-1]}"
    return f"{stripped} {marker}"
