"""Line-based input files read with line numbers, so every bad row can be named as `path:line: reason`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from rag.errors import ConfigError


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for each non-blank line; ConfigError naming
    the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; ConfigError naming the file (and line)."""
    rows = []
    for number, line in read_lines(path):
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows


def read_questions(path: Path) -> list[str]:
    """Questions, one per line: plain text, or JSON objects with a 'question' field (a qa JSONL)."""
    questions = []
    for number, line in read_lines(path):
        if not line.lstrip().startswith("{"):
            questions.append(line.strip())
            continue
        try:
            questions.append(str(json.loads(line)["question"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{path}:{number}: expected a JSON object with a 'question' field") from None
    return questions
