"""Values that the database cannot store, caught before a write so they are a 400 and not a 500."""

from __future__ import annotations

import math
from typing import Any

NON_FINITE = "NaN, Infinity and numbers too large for a float (such as 1e400) cannot be stored"


def text_unstorable(value: Any) -> str | None:
    """What in the string ``value`` no database here can store, or ``None``: PostgreSQL text refuses
    NUL, and no encoding takes a lone surrogate (JSON carries both)."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return "a NUL character (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired surrogate (\\ud800-\\udfff)"
    return None


def unstorable_at(value: Any, path: str) -> tuple[str, str] | None:
    """(where, what) of the first thing in ``value`` (parsed JSON) that no database here can store, or
    ``None``: text that `text_unstorable` refuses (in keys too), or a NaN or infinite float, which
    JSON columns cannot hold. ``where`` is ``path`` followed by ``.key`` and ``[index]`` steps."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, NON_FINITE)
    if isinstance(value, dict):
        for key, item in value.items():
            if found := unstorable_at(str(key), path) or unstorable_at(item, f"{path}.{key}"):
                return found
        return None
    if isinstance(value, list):
        return next((found for i, item in enumerate(value) if (found := unstorable_at(item, f"{path}[{i}]"))), None)
    problem = text_unstorable(value)
    return (path, f"contains {problem}") if problem else None
