"""Small figures over scores, pure Python (no torch): the held-out evaluation computes them, and the
pages' selectors compute them again over stored samples without loading the training stack."""

from __future__ import annotations

from collections.abc import Iterable


def win_rate(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The share of ``(a, b)`` score pairs where ``a`` wins, a tie counting half; None for no pairs."""
    points = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs]
    return sum(points) / len(points) if points else None
