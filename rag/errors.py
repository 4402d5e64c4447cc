"""Errors: one family for every problem a user can fix, so callers catch exactly those.

The CLI and the chat catch `RagError` and show its message as one line; any other exception is a
bug in this code and keeps its traceback. Each module's own error (LoadError, CollectionError,
GenerationError, ...) derives from `RagError`. It defines no behaviour.
"""

from __future__ import annotations


class RagError(Exception):
    """A problem with the user's input, files, settings or servers; the message says which and why."""


class ConfigError(RagError, ValueError):
    """A setting, flag or argument with a bad value; the message echoes the value."""


class MissingDependency(RagError, ImportError):
    """An optional package or a packaged model that is not installed; the message says how to install it."""
