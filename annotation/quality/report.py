"""The agreement report of a project: loaded from the database in bulk, computed with numpy.

Tie handling (stated on the pages): in ``percent_agreement`` a tie is a third answer that agrees
only with a tie; ``percent_agreement_no_ties`` leaves out every label pair where either labeler
said tie. Pairwise decisions are coded b preferred < tie < a preferred for the ordinal alpha.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection
from django.utils import timezone

from annotation import rules
from annotation.models import Comparison, Guideline, Project, Ranking, ResponseSet
from annotation.quality import metrics

MIN_PAIR_OVERLAP = 20  # label pairs two labelers must share before their Cohen's kappa is shown
LOW_AGREEMENT_W = 0.3  # response sets below this Kendall's W go to review
FAST_ITEM_MS = 3000  # anything faster than this, or a quarter of the project median, is suspicious


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


_COLUMNS = ("set_id", "a", "b", "code", "labeler", "ranking", "version", "day")
_SELECT = f"""
    SELECT c.response_set_id, c.response_a_id, c.response_b_id, {rules.sql_outcome_code("c.outcome")},
           c.labeler_id, c.ranking_id, COALESCE(g.version, 0), {{day}}
    FROM {Comparison._meta.db_table} c
    JOIN {ResponseSet._meta.db_table} s ON s.id = c.response_set_id
    JOIN {Ranking._meta.db_table} r ON r.id = c.ranking_id
    LEFT JOIN {Guideline._meta.db_table} g ON g.id = r.guideline_id
    WHERE s.project_id = %s
"""


def load_labels(project_id: int) -> Labels:
    """Every comparison of the project as arrays. PostgreSQL streams it with COPY."""
    if connection.vendor == "postgresql":
        sql = _SELECT.format(day="(c.created_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01'")
        query = sql.replace("%s", str(int(project_id)))  # an int: nothing to quote
        buffer = io.BytesIO()
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
            for block in copy:
                buffer.write(block)
        buffer.seek(0)
        if buffer.getbuffer().nbytes == 0:
            data = np.zeros((0, len(_COLUMNS)), dtype=np.int64)
        else:
            import pandas as pd

            data = pd.read_csv(buffer, header=None, dtype=np.int64).to_numpy()
    else:
        sql = _SELECT.format(day="CAST(julianday(date(c.created_at)) - 2440587.5 AS INTEGER)")
        with connection.cursor() as cursor:
            cursor.execute(sql, [project_id])
            data = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, len(_COLUMNS))
    return Labels(**{name: np.ascontiguousarray(data[:, i]) for i, name in enumerate(_COLUMNS)})


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def _unique_rows(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, axis=0, return_inverse=True)`` for a 2-D integer array, by lexsort: the
    same rows in the same order, without the slow sort of rows viewed as opaque bytes."""
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    new = np.ones(len(ordered), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    inverse = np.empty(len(ordered), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _units(labels: Labels) -> np.ndarray:
    return _unique_rows(np.stack([labels.set_id, labels.a, labels.b], axis=1))[1]


def _midranks(labels: Labels, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per ranking: mid-ranks over its K responses (ordered by response id), the tie term
    sum(t^3 - t), its response set, and the response ids."""
    ranking = np.concatenate([labels.ranking, labels.ranking])
    response = np.concatenate([labels.a, labels.b])
    lost = np.concatenate([labels.code == -1, labels.code == 1]).astype(np.float64)
    tied = np.concatenate([labels.code == 0, labels.code == 0]).astype(np.float64)
    uniq, index = _unique_rows(np.stack([ranking, response], axis=1))
    losses = np.bincount(index, weights=lost, minlength=len(uniq))
    ties = np.bincount(index, weights=tied, minlength=len(uniq))
    n_rankings = len(uniq) // k
    midranks = (1.0 + losses + ties / 2.0).reshape(n_rankings, k)
    tie_term = (ties**2 + 2 * ties).reshape(n_rankings, k).sum(axis=1)  # sum over items of t^2 - 1, t = ties + 1
    ranking_ids = uniq[::k, 0]
    first = np.unique(labels.ranking, return_index=True)[1]
    set_of = dict(zip(labels.ranking[first].tolist(), labels.set_id[first].tolist(), strict=True))
    sets = np.array([set_of[r] for r in ranking_ids.tolist()], dtype=np.int64)
    return midranks, tie_term, sets, uniq[:, 1].reshape(n_rankings, k)


def compute_report(
    labels: Labels,
    *,
    k: int,
    usernames: dict[int, str],
    set_tags: dict[int, list[str]],
    bootstrap: int = 1000,
    review_w: float = LOW_AGREEMENT_W,
) -> dict[str, Any]:
    """The whole agreement report as a JSON-able dict."""
    started = time.perf_counter()
    n = len(labels)
    report: dict[str, Any] = {
        "n_comparisons": n,
        "n_rankings": int(np.unique(labels.ranking).size),
        "n_labelers": int(np.unique(labels.labeler).size),
        "n_sets": int(np.unique(labels.set_id).size),
        "tie_handling": (
            "percent_agreement: a tie is a third answer and agrees only with a tie; "
            "percent_agreement_no_ties: label pairs where either labeler said tie are left out."
        ),
    }
    if n == 0:
        report["headline"] = {}
        report.update(
            by_guideline_version=[], by_tag=[], by_labeler=[], by_labeler_pair=[], over_time=[], low_agreement_sets=[]
        )
        report["seconds"] = round(time.perf_counter() - started, 3)
        return report

    unit = _units(labels)
    pairs = metrics.label_pairs(unit, labels.labeler, labels.code)
    same = (pairs.code_i == pairs.code_j).astype(np.int64)
    no_tie = (pairs.code_i != 0) & (pairs.code_j != 0)

    # Per response set sums: the clusters of the bootstrap.
    set_ids, set_index = np.unique(labels.set_id, return_inverse=True)
    pair_set_index = set_index[pairs.index_i]
    agree_per_set = np.bincount(pair_set_index, weights=same, minlength=set_ids.size)
    pairs_per_set = np.bincount(pair_set_index, minlength=set_ids.size).astype(np.float64)
    agree_nt = np.bincount(pair_set_index, weights=same * no_tie, minlength=set_ids.size)
    pairs_nt = np.bincount(pair_set_index, weights=no_tie.astype(np.float64), minlength=set_ids.size)

    overall = metrics.percent_agreement(pairs)
    without_ties = metrics.percent_agreement(pairs, ties="exclude")

    # Krippendorff's alpha, ordinal on pairwise decisions, and its bootstrap over sets.
    table, table_units = metrics.category_table(unit, labels.code)
    unit_set_index = np.zeros(table_units.size, dtype=np.int64)
    unit_set_index[unit] = set_index
    pairable = table.sum(axis=1) >= 2
    per_unit_o = np.zeros((table.shape[0], 3, 3))
    if pairable.any():
        t = table[pairable].astype(np.float64)
        m = t.sum(axis=1)
        per_unit_o[pairable] = (t[:, :, None] * t[:, None, :] - t[:, :, None] * np.eye(3)[None]) / (m - 1)[
            :, None, None
        ]
    per_set_o = np.stack(
        [
            np.bincount(unit_set_index, weights=per_unit_o[:, i, j], minlength=set_ids.size)
            for i in range(3)
            for j in range(3)
        ],
        axis=1,
    ).reshape(set_ids.size, 3, 3)
    # Alpha from the summed coincidences: the krippendorff package's number (the tests check both
    # agree), without a second pass over every unit.
    alpha_ordinal = metrics.alpha_from_coincidences(
        per_set_o.sum(axis=0), level="ordinal", value_domain=list(metrics.CODES)
    )

    # Rank-level statistics: Kendall's W per set, interval alpha on mid-ranks, Kendall's tau.
    midranks, tie_term, ranking_sets, _ = _midranks(labels, k)
    w_ids, w = metrics.kendalls_w_from_midranks(midranks, tie_term, ranking_sets)
    domain = np.arange(2, 2 * k + 1) / 2.0  # mid-ranks are multiples of 0.5 in [1, K]
    ranking_order = np.argsort(ranking_sets, kind="stable")
    sorted_sets = ranking_sets[ranking_order]
    rank_units = np.repeat(sorted_sets, k) * (k + 1) + np.tile(np.arange(k), sorted_sets.size)
    _, rank_unit_index = np.unique(rank_units, return_inverse=True)
    value_index = np.rint(midranks[ranking_order].reshape(-1) * 2).astype(np.int64) - 2
    n_rank_units = int(rank_unit_index.max()) + 1
    rank_counts = np.bincount(
        rank_unit_index * domain.size + value_index, minlength=n_rank_units * domain.size
    ).reshape(n_rank_units, domain.size)
    alpha_interval = metrics.alpha_from_coincidences(
        metrics.coincidences(rank_counts), level="interval", value_domain=list(domain)
    )
    tau = metrics.kendall_tau_by_ranking_pair(pairs, labels.ranking, k)

    (ci_agreement, ci_no_ties), ci_alpha = metrics.bootstrap_all(
        [(agree_per_set, pairs_per_set), (agree_nt, pairs_nt)],
        per_set_o,
        level_of_measurement="ordinal",
        value_domain=list(metrics.CODES),
        resamples=bootstrap,
        alpha_resamples=min(bootstrap, 200),
    )
    report["headline"] = {
        "percent_agreement": {"value": _round(overall.rate), "ci95": ci_agreement, "pairs": overall.pairs},
        "percent_agreement_no_ties": {
            "value": _round(without_ties.rate),
            "ci95": ci_no_ties,
            "pairs": without_ties.pairs,
        },
        "krippendorff_alpha_ordinal": {"value": _round(alpha_ordinal), "ci95": ci_alpha},
        "krippendorff_alpha_interval_ranks": {"value": _round(alpha_interval)},
        "fleiss_kappa": {
            "value": _round(metrics.fleiss_kappa(table)),
            "raters": int(np.bincount(table.sum(axis=1)).argmax()),
        },
        "kendall_w_mean": {
            "value": _round(float(np.nanmean(w)) if np.isfinite(w).any() else None),
            "sets": int(np.isfinite(w).sum()),
        },
        "kendall_tau_mean": {
            "value": _round(float(np.nanmean(tau)) if np.isfinite(tau).any() else None),
            "ranking_pairs": int(tau.size),
        },
    }

    # Per guideline version: label pairs made under the same version.
    version_i, version_j = labels.version[pairs.index_i], labels.version[pairs.index_j]
    same_version = version_i == version_j
    by_version = []
    for version in np.unique(labels.version).tolist():
        mask = same_version & (version_i == version)
        by_version.append(
            {
                "version": version or None,
                "percent_agreement": rules.rate(same[mask].sum(), mask.sum()),
                "pairs": int(mask.sum()),
                "comparisons": int((labels.version == version).sum()),
            }
        )
    report["by_guideline_version"] = by_version

    # Per tag (a set counts under each of its prompt's tags).
    tag_agree: dict[str, float] = defaultdict(float)
    tag_pairs: dict[str, float] = defaultdict(float)
    tag_sets: dict[str, int] = defaultdict(int)
    for index, set_id in enumerate(set_ids.tolist()):
        for tag in set_tags.get(set_id, []):
            tag_agree[tag] += agree_per_set[index]
            tag_pairs[tag] += pairs_per_set[index]
            tag_sets[tag] += 1
    report["by_tag"] = [
        {
            "tag": tag,
            "percent_agreement": rules.rate(tag_agree[tag], tag_pairs[tag]),
            "pairs": int(tag_pairs[tag]),
            "sets": tag_sets[tag],
        }
        for tag in sorted(tag_pairs)
    ]

    # Per labeler: agreement with every other labeler on the same pairs.
    n_lab = int(labels.labeler.max()) + 1
    both = np.concatenate([pairs.labeler_i, pairs.labeler_j])
    agree_lab, total_lab = metrics.grouped_agreement(both, np.concatenate([same, same]), n_lab)
    comparisons_lab = np.bincount(labels.labeler, minlength=n_lab)
    first_of_ranking = np.unique(labels.ranking, return_index=True)[1]
    rankings_lab = np.bincount(labels.labeler[first_of_ranking], minlength=n_lab)
    report["by_labeler"] = [
        {
            "labeler_id": labeler,
            "username": usernames.get(labeler, str(labeler)),
            "percent_agreement": rules.rate(agree_lab[labeler], total_lab[labeler]),
            "pairs": int(total_lab[labeler]),
            "comparisons": int(comparisons_lab[labeler]),
            "rankings": int(rankings_lab[labeler]),
        }
        for labeler in np.unique(labels.labeler).tolist()
    ]

    # Per labeler pair: percent agreement and Cohen's kappa where they overlap enough.
    kappas = metrics.cohens_kappa_by_pair(pairs, min_overlap=1)
    pair_key = pairs.labeler_i * n_lab + pairs.labeler_j
    keys, key_index = np.unique(pair_key, return_inverse=True)
    agree_pair = np.bincount(key_index, weights=same)
    total_pair = np.bincount(key_index)
    report["by_labeler_pair"] = [
        {
            "a": int(key // n_lab),
            "b": int(key % n_lab),
            "percent_agreement": rules.rate(agree_pair[i], total_pair[i]),
            "pairs": int(total_pair[i]),
            "cohens_kappa": _round(kappas[(int(key // n_lab), int(key % n_lab))][0])
            if total_pair[i] >= MIN_PAIR_OVERLAP
            else None,
        }
        for i, key in enumerate(keys.tolist())
    ]

    # Over time: a label pair counts on the day the later of its two labels was made.
    day = np.maximum(labels.day[pairs.index_i], labels.day[pairs.index_j])
    days, day_index = np.unique(day, return_inverse=True)
    agree_day = np.bincount(day_index, weights=same)
    total_day = np.bincount(day_index)
    epoch = np.datetime64("1970-01-01")
    report["over_time"] = [
        {
            "date": str(epoch + np.timedelta64(int(d), "D")),
            "percent_agreement": rules.rate(agree_day[i], total_day[i]),
            "pairs": int(total_day[i]),
        }
        for i, d in enumerate(days.tolist())
    ]

    low = np.isfinite(w) & (w < review_w)
    order = np.argsort(w[low])
    report["low_agreement_sets"] = [
        {"response_set_id": int(s), "kendall_w": _round(v)}
        for s, v in zip(w_ids[low][order][:500], w[low][order][:500], strict=True)
    ]
    report["low_agreement_count"] = int(low.sum())
    report["kendall_w_threshold"] = review_w
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


@dataclass
class QualityResult:
    report: dict[str, Any]
    consensus: dict[str, np.ndarray]
    labelers: dict[int, dict[str, Any]]


def project_quality(*, project: Project, bootstrap: int = 1000) -> QualityResult:
    """Load a project's comparisons once; compute the agreement report, the consensus of every
    set and every labeler's quality figures."""
    from django.contrib.auth import get_user_model

    from labelers.models import LabelerQuality

    started = time.perf_counter()
    labels = load_labels(project.pk)
    meta = load_ranking_meta(project)
    loaded = time.perf_counter() - started
    labeler_ids = np.unique(np.concatenate([labels.labeler, meta.labeler])).tolist()
    usernames = dict(get_user_model().objects.filter(pk__in=labeler_ids).values_list("pk", "username"))
    set_tags = {
        set_id: tags
        for set_id, tags in project.response_sets.values_list("id", "prompt__tags").iterator(chunk_size=10000)
        if tags
    }
    report = compute_report(
        labels,
        k=project.k,
        usernames=usernames,
        set_tags=set_tags,
        bootstrap=bootstrap,
        review_w=project.review_kendall_w,
    )
    consensus = compute_consensus(labels, project.k) if len(labels) else {}
    labelers = compute_labeler_quality(labels, meta, consensus) if len(labels) else {}
    gold: dict[int, dict[str, Any]] = {
        row["labeler_id"]: dict(row)
        for row in LabelerQuality.objects.filter(project=project).values(
            "labeler_id", "gold_items", "gold_pairs", "gold_pairs_agreed", "qualification"
        )
    }
    for row in report["by_labeler"]:
        figures = labelers.get(row["labeler_id"], {})
        row.update({key: figures.get(key) for key in LABELER_COLUMNS})
        g = gold.get(row["labeler_id"], {})
        row["gold_items"] = g.get("gold_items", 0)
        row["gold_accuracy"] = rules.rate(g.get("gold_pairs_agreed", 0), g.get("gold_pairs", 0))
        row["qualification"] = g.get("qualification", "not_required")
    if len(labels):
        report["headline"]["consensus_confidence_mean"] = {"value": _round(float(consensus["confidence"].mean()))}
    report["load_seconds"] = round(loaded, 3)
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["computed_at"] = timezone.now().isoformat()
    return QualityResult(report=report, consensus=consensus, labelers=labelers)


def project_report(*, project: Project, bootstrap: int = 1000) -> dict[str, Any]:
    """The agreement report alone (see ``project_quality``)."""
    return project_quality(project=project, bootstrap=bootstrap).report


LABELER_COLUMNS = (
    "reliability",
    "agreement_with_consensus",
    "position_bias",
    "fast_items",
    "intransitive_cycles",
    "median_time_ms",
)


@dataclass
class RankingMeta:
    """One entry per ranking."""

    ranking: np.ndarray
    labeler: np.ndarray
    time_ms: np.ndarray
    prompt: np.ndarray
    display: np.ndarray  # rankings x K response ids in the order the labeler saw them


def load_ranking_meta(project: Project) -> RankingMeta:
    k = project.k
    if connection.vendor == "postgresql":
        # Plain integers, the display order unpacked by the server: no JSON decoding per row here.
        order = ", ".join(f"CAST(r.display_order->>{i} AS bigint)" for i in range(k))
        sql = (
            f"SELECT r.id, r.labeler_id, r.time_spent_ms, s.prompt_id, {order} FROM annotation_ranking r "
            "JOIN annotation_responseset s ON s.id = r.response_set_id WHERE s.project_id = %s ORDER BY r.id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [project.pk])
            data = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 4 + k)
        return RankingMeta(
            ranking=data[:, 0].copy(),
            labeler=data[:, 1].copy(),
            time_ms=data[:, 2].copy(),
            prompt=data[:, 3].copy(),
            display=np.ascontiguousarray(data[:, 4:]),
        )
    from annotation.models import Ranking

    rows = list(
        Ranking.objects.filter(response_set__project=project)
        .order_by("id")
        .values_list("id", "labeler_id", "time_spent_ms", "response_set__prompt_id", "display_order")
        .iterator(chunk_size=20000)
    )
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return RankingMeta(empty, empty, empty, empty, np.zeros((0, k), dtype=np.int64))
    ids, labelers, times, prompts, display = zip(*rows, strict=True)
    return RankingMeta(
        ranking=np.array(ids, dtype=np.int64),
        labeler=np.array(labelers, dtype=np.int64),
        time_ms=np.array(times, dtype=np.int64),
        prompt=np.array(prompts, dtype=np.int64),
        display=np.array([[int(x) for x in order] for order in display], dtype=np.int64).reshape(-1, k),
    )


def compute_consensus(labels: Labels, k: int) -> dict[str, np.ndarray]:
    """Bradley-Terry per response set, all sets at once (MM iterations on sets x K x K arrays).

    Returns per set: ids, response ids (sets x K), scores, dense ranks, confidence (the share of
    the set's labels that agree with the consensus order), and per label whether it agrees."""
    keys = np.stack([np.concatenate([labels.set_id, labels.set_id]), np.concatenate([labels.a, labels.b])], axis=1)
    uniq, item = _unique_rows(keys)
    set_ids = uniq[::k, 0]
    responses = uniq[:, 1].reshape(-1, k)
    n_sets = set_ids.size
    n = len(labels)
    set_index = item[:n] // k
    ia, ib = item[:n] % k, item[n:] % k
    a_score = np.where(labels.code == 1, 1.0, np.where(labels.code == 0, 0.5, 0.0))
    cells = n_sets * k * k
    wins = (
        np.bincount((set_index * k + ia) * k + ib, weights=a_score, minlength=cells)
        + np.bincount((set_index * k + ib) * k + ia, weights=1.0 - a_score, minlength=cells)
    ).reshape(n_sets, k, k)
    prior = 1.0 / (k - 1)  # one virtual tie against every other item keeps unbeaten items finite
    games = wins + wins.transpose(0, 2, 1) + prior
    eye = np.eye(k, dtype=bool)
    games[:, eye] = 0.0
    total_wins = wins.sum(axis=2) + 0.5
    p = np.ones((n_sets, k))
    for _ in range(100):
        denominator = (games / (p[:, :, None] + p[:, None, :])).sum(axis=2)
        p_new = total_wins / denominator
        p_new /= np.exp(np.log(p_new).mean(axis=1, keepdims=True))
        converged = np.abs(p_new - p).max() < 1e-7
        p = p_new
        if converged:
            break
    scores = np.log(p)
    # Dense ranks from scores, equal (within 1e-6) scores share a rank.
    rounded = np.round(scores, 6)
    earlier = np.tril(np.ones((k, k), dtype=bool), -1)  # earlier[j, j'] = j' < j
    equal = rounded[:, :, None] == rounded[:, None, :]
    first_of_value = ~(equal & earlier[None]).any(axis=2)  # (sets, K)
    higher = rounded[:, None, :] > rounded[:, :, None]  # higher[s, i, j] = v_j > v_i
    ranks = (higher & first_of_value[:, None, :]).sum(axis=2) + 1
    consensus_code = np.sign(rounded[set_index, ia] - rounded[set_index, ib]).astype(np.int64)
    agrees = consensus_code == labels.code
    confidence = np.bincount(set_index, weights=agrees, minlength=n_sets) / np.maximum(
        np.bincount(set_index, minlength=n_sets), 1
    )
    return {
        "set_ids": set_ids,
        "responses": responses,
        "scores": scores,
        "ranks": ranks,
        "confidence": confidence,
        "label_agrees": agrees,
    }


def compute_labeler_quality(
    labels: Labels, meta: RankingMeta, consensus: dict[str, np.ndarray]
) -> dict[int, dict[str, Any]]:
    """Per labeler: reliability (one-coin Dawid-Skene), agreement with consensus, position bias,
    suspiciously fast items, intransitive cycles, median time per item."""
    from annotation.quality.reliability import one_coin_dawid_skene

    out: dict[int, dict[str, Any]] = {}
    if len(labels) == 0:
        return out
    unit = _units(labels)
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
            "reliability": _round(skill.get(labeler)),
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
