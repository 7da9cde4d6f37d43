"""JSON from clients, bounded before anything walks it: body size, nesting depth, and numbers a
database can store (no NaN, no Infinity, nothing that overflows a float).

``loads`` is the one parser for client JSON (API bodies through ``BoundedJSONParser``, the
browser's JSON posts, import lines); it raises ``ValueError`` with a message that says what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def depth_of(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, [] and {} are 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend((child, depth) for child in item if isinstance(child, dict | list))
    return deepest


def loads(data: str | bytes, *, max_depth: int | None = None) -> Any:
    """Parse client JSON; ValueError when it is not JSON, nests deeper than ``max_depth``
    (settings.JSON_MAX_DEPTH) or holds NaN, Infinity or a number out of float range."""
    limit = settings.JSON_MAX_DEPTH if max_depth is None else max_depth
    try:
        value = json.loads(data, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {limit} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    if depth_of(value) > limit:
        raise ValueError(f"nested deeper than {limit} levels")
    return value


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


def too_large_message(size: int) -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return f"The request body is {size / 1e6:.1f} MB; at most {limit / 1e6:.1f} MB is accepted."


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser reading at most DATA_UPLOAD_MAX_MEMORY_SIZE bytes through ``loads``."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise RequestTooLarge(too_large_message(len(data)))
        try:
            return loads(data)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
