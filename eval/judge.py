"""Optional LLM judge (off by default): RAGAS-style faithfulness and answer relevance, 1 to 5.

A model on any OpenAI-compatible server (vLLM) reads the question, the passages the answer was
given (RAG arms) and the answer, and replies in JSON held to a schema by the server's structured
output. Scores are rescaled to 0..1 and stored per record as `judge_faithfulness` and
`judge_relevance`. It does not compute the offline metrics (eval/scoring.py).
"""

from __future__ import annotations

import json

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


def judge_records(base_url: str, model: str, records, rows_by_id: dict[str, dict]) -> dict:
    """Grade every record in place; returns {graded, failed}."""
    from rag.generator import OpenAIGenerator

    generator = OpenAIGenerator(base_url, model)
    graded = failed = 0
    for record in records:
        passages = "\n\n".join(f"[{n}] {s['text']}" for n, s in enumerate(record.sources, start=1)) or "(none)"
        prompt = f"Question: {record.question}\n\nPassages:\n{passages}\n\nAnswer: {record.answer}"
        reply = generator.generate_json([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                        SCHEMA, name="grade", max_tokens=40)
        try:
            grade = json.loads(reply)
            record.judge = {"judge_faithfulness": (int(grade["faithfulness"]) - 1) / 4,
                            "judge_relevance": (int(grade["relevance"]) - 1) / 4}
            graded += 1
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            failed += 1
    return {"graded": graded, "failed": failed, "model": generator.name}
