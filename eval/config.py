"""An evaluation run's configuration: flags, or an experiment folder's config.toml.

An experiment is data: `eval/experiments/NAME/config.toml` holds these fields (and may set any
`rag.settings.Settings` field under `[settings]`); `rag eval run eval/experiments/NAME` runs it
and writes its report to `out`. It does not run anything.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError
from rag.modes import ANSWER_MODES

# The arms are the answer modes; what each one uses is defined once, in rag.answer.ANSWER_MODES.
ARMS = tuple(ANSWER_MODES)
LORA_ARMS = tuple(name for name, mode in ANSWER_MODES.items() if mode.adapter)
RAG_ARMS = tuple(name for name, mode in ANSWER_MODES.items() if mode.retrieval)


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class EvalConfig:
    """Each field is also a `rag eval` flag (rag/cli_args.py), with its help text and default here."""

    qa: Path | None = field(metadata={
        "help": "questions: JSONL with id, question, answer, evidence, source, facts, answerable"})
    out: Path = field(metadata={"help": "report folder, e.g. reports/NAME"})
    name: str = _opt("", "report name (default: the report folder's name)")
    arms: tuple[str, ...] = _opt(ARMS, f"comma-separated, among {', '.join(ARMS)}")
    adapter: str = _opt("", "a registered adapter (or peft folder): needed by the LoRA arms")
    limit: int = _opt(0, "first N questions only (0: all)")
    sample: int = _opt(0, "or a random sample of N questions drawn with --seed, kept in file order (0: all)")
    bootstrap: int = _opt(2000, "bootstrap resamples of the confidence intervals")
    seed: int = _opt(0, "random seed of the sample and the bootstrap")
    retrieval_k: int = _opt(10, "depth of the ranking scored by MRR and nDCG@10")
    # A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv): its queries are the questions and
    # its qrels the relevance, matched to chunks of the corpus files written by eval.beir.write_corpus_files.
    beir: Path | None = _opt(None, "a BEIR folder instead of --qa: queries are the questions, qrels the relevance "
                                   "(the collection must hold the corpus files of eval.beir.write_corpus_files)")
    # Knowledge update: new documents and questions about them; RAG ingests, LoRA retrains.
    update_docs: Path | None = _opt(None, "knowledge update: new documents (folder or file)")
    update_qa: Path | None = _opt(None, "knowledge update: questions about the new documents")
    update_steps: int = _opt(30, "knowledge update: LoRA training steps")
    # Optional LLM judge (OpenAI-compatible server); off when judge_url is empty.
    judge_url: str = _opt("", "optional LLM judge: an OpenAI-compatible server (off by default)")
    judge_model: str = _opt("", "the judge's served model name")
    settings: dict[str, Any] = field(default_factory=dict)  # Settings overrides (collection, backend, k, ...)

    def __post_init__(self) -> None:
        self.qa, self.out = (Path(self.qa) if self.qa else None), Path(self.out)
        self.beir = Path(self.beir) if self.beir else None
        if self.qa is None and self.beir is None:
            raise ConfigError("give the questions: a qa JSONL file, or a BEIR folder")
        self.update_docs = Path(self.update_docs) if self.update_docs else None
        self.update_qa = Path(self.update_qa) if self.update_qa else None
        self.arms = tuple(a.strip() for a in (self.arms.split(",") if isinstance(self.arms, str) else self.arms))
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ConfigError(f"arms must be among {', '.join(ARMS)}; got {', '.join(self.arms) or 'none'}")
        if any(a in LORA_ARMS for a in self.arms) and not self.adapter:
            raise ConfigError("the lora arms need an adapter: --adapter NAME (see rag adapters)")
        if (self.update_docs is None) != (self.update_qa is None):
            raise ConfigError("a knowledge update needs both update_docs and update_qa")
        if self.limit < 0 or self.sample < 0 or self.bootstrap < 100 or self.update_steps <= 0:
            raise ConfigError("limit and sample must be >= 0, bootstrap >= 100 and update_steps > 0")
        if self.limit and self.sample:
            raise ConfigError(f"give limit ({self.limit}) or sample ({self.sample}), not both")
        self.name = self.name or self.out.name

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def load_experiment(folder: Path) -> EvalConfig:
    """`folder/config.toml` -> EvalConfig; relative paths resolve against the working folder, and the
    report goes to `folder/report` unless `out` says otherwise."""
    path = Path(folder) / "config.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    data.setdefault("out", str(Path(folder) / "report"))
    data.setdefault("name", Path(folder).name)
    if "qa" not in data and "beir" not in data:
        raise ConfigError(f"{path}: 'qa' (the questions file) or 'beir' (a BEIR folder) is required")
    data.setdefault("qa", None)
    return EvalConfig(**data)
