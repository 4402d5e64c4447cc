"""JSON Lines files read with line numbers, so every bad row can be named as `path:line: reason`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rag.errors import ConfigError


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line; ValueError naming the file (and line)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return rows
