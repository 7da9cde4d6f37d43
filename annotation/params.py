"""Parse ids from query strings and command-line arguments."""

from __future__ import annotations

import re

_ASCII_DIGITS = re.compile(r"[0-9]+")


def parse_id(value: str | None) -> int | None:
    """The value as an int when it is ASCII digits only, else ``None``.

    ``str.isdigit()`` also accepts '²' and other Unicode digits that ``int()`` refuses.
    """
    if value is None or not _ASCII_DIGITS.fullmatch(value):
        return None
    return int(value)
