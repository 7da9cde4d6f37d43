"""The agreement report's inputs as arrays, and the array helpers its computations share.

Plain numpy: no Django (an import contract says so). ``quality.loading`` fills these from the
database; ``quality.agreement``, ``quality.consensus`` and ``quality.labeler_figures`` compute on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Labels:
    """One entry per comparison."""

    set_id: np.ndarray
    a: np.ndarray
    b: np.ndarray
    code: np.ndarray
    labeler: np.ndarray
    ranking: np.ndarray
    version: np.ndarray
    day: np.ndarray  # days since 1970-01-01

    def __len__(self) -> int:
        return int(self.code.size)


@dataclass
class RankingMeta:
    """One entry per ranking."""

    ranking: np.ndarray
    labeler: np.ndarray
    time_ms: np.ndarray
    prompt: np.ndarray
    display: np.ndarray  # rankings x K response ids in the order the labeler saw them


def round6(value: float | None) -> float | None:
    """A figure as stored in the report: six decimals, ``None`` for a missing or non-finite one."""
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, axis=0, return_inverse=True)`` for a 2-D integer array, by lexsort: the
    same rows in the same order, without the slow sort of rows viewed as opaque bytes."""
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(ordered), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def comparison_units(labels: Labels) -> np.ndarray:
    """Per comparison, the index of its unit: one (set, response a, response b) pair."""
    return unique_rows(np.stack([labels.set_id, labels.a, labels.b], axis=1))[1]
