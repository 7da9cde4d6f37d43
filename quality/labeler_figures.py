"""Each labeler's figures on a project: reliability, agreement with the consensus, position bias,
fast items, intransitive cycles, time per item, and their row of the report (pure numpy, no Django)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from annotation import rules
from quality.arrays import Labels, RankingMeta, comparison_units, round6
from quality.reliability import one_coin_dawid_skene

FAST_ITEM_MS = 3000  # anything faster than this, or a quarter of the project median, is suspicious

LABELER_COLUMNS = (
    "reliability",
    "agreement_with_consensus",
    "position_bias",
    "fast_items",
    "intransitive_cycles",
    "median_time_ms",
)


def compute_labeler_quality(
    labels: Labels, meta: RankingMeta, consensus: dict[str, np.ndarray]
) -> dict[int, dict[str, Any]]:
    """Per labeler: reliability (one-coin Dawid-Skene), agreement with consensus, position bias,
    suspiciously fast items, intransitive cycles, median time per item."""
    out: dict[int, dict[str, Any]] = {}
    if len(labels) == 0:
        return out
    unit = comparison_units(labels)
    fit = one_coin_dawid_skene(unit, labels.labeler, labels.code)
    n_lab = int(max(labels.labeler.max(), meta.labeler.max() if meta.labeler.size else 0)) + 1
    agrees = np.bincount(labels.labeler, weights=consensus["label_agrees"], minlength=n_lab)
    counts = np.bincount(labels.labeler, minlength=n_lab)

    # Position bias: among decided pairs, how often the response shown first wins.
    k = meta.display.shape[1]
    position_key = np.repeat(meta.ranking, k) * (1 << 32) + meta.display.reshape(-1)
    position = np.tile(np.arange(k), meta.ranking.size)
    order = np.argsort(position_key)
    position_key, position = position_key[order], position[order]

    def _position(response: np.ndarray) -> np.ndarray:
        found = np.searchsorted(position_key, labels.ranking * (1 << 32) + response)
        return position[np.minimum(found, position.size - 1)]

    a_first = _position(labels.a) < _position(labels.b)
    decided = labels.code != 0
    first_won = decided & (a_first == (labels.code == 1))
    first_wins = np.bincount(labels.labeler, weights=first_won, minlength=n_lab)
    decided_n = np.bincount(labels.labeler, weights=decided, minlength=n_lab)

    median_all = float(np.median(meta.time_ms)) if meta.time_ms.size else 0.0
    fast_threshold = min(FAST_ITEM_MS, 0.25 * median_all) if median_all else 0.0
    fast = np.bincount(meta.labeler, weights=meta.time_ms < fast_threshold, minlength=n_lab)

    cycles = _intransitive_cycles(labels, meta)
    skill = dict(zip(fit.labeler.tolist(), fit.skill.tolist(), strict=True))
    for labeler in np.unique(np.concatenate([labels.labeler, meta.labeler])).tolist():
        times = meta.time_ms[meta.labeler == labeler]
        out[labeler] = {
            "reliability": round6(skill.get(labeler)),
            "comparisons": int(counts[labeler]),
            "agreement_with_consensus": rules.rate(agrees[labeler], counts[labeler]),
            "position_bias": rules.rate(first_wins[labeler], decided_n[labeler]),
            "fast_items": int(fast[labeler]),
            "intransitive_cycles": cycles.get(labeler, 0),
            "median_time_ms": int(np.median(times)) if times.size else None,
        }
    return out


def _intransitive_cycles(labels: Labels, meta: RankingMeta) -> dict[int, int]:
    """Directed 3-cycles in each labeler's decisions on one prompt across several response sets
    (a single ranking cannot contain one; pairwise items over shared responses can)."""
    prompt_of_ranking = dict(zip(meta.ranking.tolist(), meta.prompt.tolist(), strict=True))
    per_prompt = np.array([prompt_of_ranking.get(r, -1) for r in np.unique(labels.ranking).tolist()])
    first = np.unique(labels.ranking, return_index=True)[1]
    key = labels.labeler[first] * (1 << 32) + per_prompt
    _, counts = np.unique(key, return_counts=True)
    if counts.size == 0 or counts.max() < 2:
        return {}
    repeated = set(np.unique(key)[counts >= 2].tolist())
    prompt_of_label = np.array([prompt_of_ranking.get(r, -1) for r in labels.ranking.tolist()])
    label_key = labels.labeler * (1 << 32) + prompt_of_label
    out: dict[int, int] = defaultdict(int)
    for group in repeated:
        mask = (label_key == group) & (labels.code != 0)
        edges = {
            (int(a), int(b)) if code == 1 else (int(b), int(a))
            for a, b, code in zip(labels.a[mask], labels.b[mask], labels.code[mask], strict=True)
        }
        nodes = sorted({n for edge in edges for n in edge})
        found = 0
        for x in nodes:
            for y in nodes:
                if (x, y) in edges:
                    found += sum(1 for z in nodes if x < y and x < z and (y, z) in edges and (z, x) in edges)
        out[int(group >> 32)] += found
    return dict(out)


def labeler_rows_complete(
    rows: list[dict[str, Any]], labelers: dict[int, dict[str, Any]], gold: dict[int, dict[str, Any]]
) -> None:
    """Add each labeler's figures and stored gold standing to their row of the report's
    ``by_labeler`` table (in place)."""
    for row in rows:
        figures = labelers.get(row["labeler_id"], {})
        row.update({key: figures.get(key) for key in LABELER_COLUMNS})
        g = gold.get(row["labeler_id"], {})
        row["gold_items"] = g.get("gold_items", 0)
        row["gold_accuracy"] = rules.rate(g.get("gold_pairs_agreed", 0), g.get("gold_pairs", 0))
        row["qualification"] = g.get("qualification", "not_required")
