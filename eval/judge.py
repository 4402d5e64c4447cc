"""Optional LLM judge (off by default): RAGAS-style faithfulness and answer relevance, 1 to 5.

A model on any OpenAI-compatible server (vLLM) reads the question, the passages the answer was
given (RAG arms) and the answer, and replies in JSON held to a schema by the server's structured
output. Scores are rescaled to 0..1 and returned per question and arm as `judge_faithfulness` and
`judge_relevance`; the records are not changed. It does not compute the offline metrics (eval/scoring.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from eval.answers import Record

SCHEMA = {
    "type": "object",
    "properties": {"faithfulness": {"type": "integer", "minimum": 1, "maximum": 5},
                   "relevance": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["faithfulness", "relevance"],
}
SYSTEM = (
    "You grade answers. faithfulness: 5 if every claim in the answer is supported by the passages "
    "(or, with no passages, is plausible general knowledge), 1 if it is mostly unsupported. relevance: 5 if "
    "the answer addresses the question directly, 1 if not at all. Reply with JSON only."
)


@dataclass
class Judged:
    scores: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)  # (qid, arm) -> judge_* scores
    graded: int = 0
    failed: int = 0  # replies that were not the JSON asked for
    model: str = ""

    def summary(self) -> dict:
        return {"graded": self.graded, "failed": self.failed, "model": self.model}


def judge_records(base_url: str, model: str, records: list[Record]) -> Judged:
    """Grade every record's answer."""
    from rag.generator import OpenAIGenerator

    generator = OpenAIGenerator(base_url, model)
    judged = Judged(model=generator.name)
    for record in records:
        passages = "\n\n".join(f"[{n}] {s.text}" for n, s in enumerate(record.sources, start=1)) or "(none)"
        prompt = f"Question: {record.question}\n\nPassages:\n{passages}\n\nAnswer: {record.answer}"
        reply = generator.generate_json([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                        SCHEMA, name="grade", max_tokens=40)
        try:
            grade = json.loads(reply)
            judged.scores[(record.qid, record.arm)] = {"judge_faithfulness": (int(grade["faithfulness"]) - 1) / 4,
                                                       "judge_relevance": (int(grade["relevance"]) - 1) / 4}
            judged.graded += 1
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            judged.failed += 1
    return judged
