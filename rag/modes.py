"""The answer modes, defined once: whether each retrieves, whether it carries the LoRA adapter.

`rag ask --mode`, the chat's Mode and the eval's arms all read them. A module of its own, with no
imports, so the CLI can build its flags from it without loading retrieval or a model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnswerMode:
    """One way to answer, defined once for the CLI, the chat and the eval's arms."""

    name: str
    label: str  # as the chat shows it
    retrieval: bool  # the answer is grounded in retrieved passages, cited
    adapter: bool  # the generator carries the LoRA adapter


ANSWER_MODES = {mode.name: mode for mode in (
    AnswerMode("base", "Base model", retrieval=False, adapter=False),
    AnswerMode("rag", "RAG", retrieval=True, adapter=False),
    AnswerMode("lora", "LoRA", retrieval=False, adapter=True),
    AnswerMode("lora+rag", "LoRA + RAG", retrieval=True, adapter=True),
)}
