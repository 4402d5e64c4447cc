"""CLI flags made from dataclass fields, so a default, a type or a list of choices is written once.

A field becomes `--field-name` with the field's type, its default (shown in the help) and its help
text from `field(metadata={"help": ...})`; choices come from `metadata["choices"]`. Booleans become
`--flag` switches. In the spirit of vLLM's `EngineArgs.add_cli_args`. It does not validate: the
dataclass's own `__post_init__` does, when it is built from the parsed values.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Iterable


def add_fields(parser: argparse.ArgumentParser, cls: type, names: Iterable[str], *, optional: bool = False) -> None:
    """Add a flag to `parser` for each named field of the dataclass `cls`. `optional`: fields with
    no default are not required on the command line either (the command checks them itself, e.g.
    when they may come from a file instead)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in names:
        f = fields[name]
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = _scalar(hints[name])
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
            continue
        required = not optional and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if isinstance(default, tuple):  # a list field, given on the command line as "a,b,c"
            default = ",".join(map(str, default))
        shown = "" if default in (None, "") else f" (default: {default})"
        parser.add_argument(flag, dest=name, type=kind, default=default, choices=f.metadata.get("choices"),
                            help=help_text + shown, required=required)


def field_values(args: argparse.Namespace, cls: type, names: Iterable[str]) -> dict[str, Any]:
    """The parsed values of the named fields, for `cls(**values, ...)`."""
    return {name: getattr(args, name) for name in names}


def _scalar(hint: Any) -> type:
    """int for `int`, `int | None`, `Optional[int]`; Path-like types are read as str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if base in (int, float, bool):
        return base
    return str
