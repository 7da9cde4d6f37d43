"""The agreement report's figures, computed from the comparisons as arrays (pure numpy, no Django).

Tie handling (stated on the pages): in ``percent_agreement`` a tie is a third answer that agrees
only with a tie; ``percent_agreement_no_ties`` leaves out every label pair where either labeler
said tie. Pairwise decisions are coded b preferred < tie < a preferred for the ordinal alpha.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from annotation import rules
from quality import metrics
from quality.arrays import Labels, comparison_units, round6, unique_rows

MIN_PAIR_OVERLAP = 20  # label pairs two labelers must share before their Cohen's kappa is shown
LOW_AGREEMENT_W = 0.3  # response sets below this Kendall's W go to review


def _midranks(labels: Labels, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per ranking: mid-ranks over its K responses (ordered by response id), the tie term
    sum(t^3 - t), its response set, and the response ids."""
    ranking = np.concatenate([labels.ranking, labels.ranking])
    response = np.concatenate([labels.a, labels.b])
    lost = np.concatenate([labels.code == -1, labels.code == 1]).astype(np.float64)
    tied = np.concatenate([labels.code == 0, labels.code == 0]).astype(np.float64)
    uniq, index = unique_rows(np.stack([ranking, response], axis=1))
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

    unit = comparison_units(labels)
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
        "percent_agreement": {"value": round6(overall.rate), "ci95": ci_agreement, "pairs": overall.pairs},
        "percent_agreement_no_ties": {
            "value": round6(without_ties.rate),
            "ci95": ci_no_ties,
            "pairs": without_ties.pairs,
        },
        "krippendorff_alpha_ordinal": {"value": round6(alpha_ordinal), "ci95": ci_alpha},
        "krippendorff_alpha_interval_ranks": {"value": round6(alpha_interval)},
        "fleiss_kappa": {
            "value": round6(metrics.fleiss_kappa(table)),
            "raters": int(np.bincount(table.sum(axis=1)).argmax()),
        },
        "kendall_w_mean": {
            "value": round6(float(np.nanmean(w)) if np.isfinite(w).any() else None),
            "sets": int(np.isfinite(w).sum()),
        },
        "kendall_tau_mean": {
            "value": round6(float(np.nanmean(tau)) if np.isfinite(tau).any() else None),
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
            "cohens_kappa": round6(kappas[(int(key // n_lab), int(key % n_lab))][0])
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
        {"response_set_id": int(s), "kendall_w": round6(v)}
        for s, v in zip(w_ids[low][order][:500], w[low][order][:500], strict=True)
    ]
    report["low_agreement_count"] = int(low.sum())
    report["kendall_w_threshold"] = review_w
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report
