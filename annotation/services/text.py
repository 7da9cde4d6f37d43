"""Text that the database cannot store, caught before a write so it is a 400 and not a 500."""

from __future__ import annotations

from typing import Any


def text_unstorable(value: Any) -> str | None:
    """What in ``value`` (a string, or lists and dicts of them) no database here can store, or
    ``None``: PostgreSQL text refuses NUL, and no encoding takes a lone surrogate (JSON carries both)."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character (\\u0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "an unpaired surrogate (\\ud800-\\udfff)"
        return None
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    return next((problem for problem in map(text_unstorable, items) if problem), None)
