"""Agreement statistics over comparisons, vectorised with numpy.

Inputs are plain arrays, one entry per comparison (one labeler's decision on one pair of responses):
``unit`` (an integer id of the pair: response set x response a x response b), ``labeler`` (an
integer id) and ``code`` (+1: a preferred, 0: tie, -1: b preferred). No Django here.

Library implementations are used where they fit: Fleiss' kappa (statsmodels), Krippendorff's alpha
(krippendorff), Kendall's tau (scipy, in the tests as the reference). Three statistics are computed
here because the libraries take one pair or one table at a time and a project has tens of thousands
of labeler pairs and response sets: Cohen's kappa for every labeler pair at once (checked against
scikit-learn), Kendall's W with tie correction, and Krippendorff's alpha from a coincidence matrix
for the bootstrap (checked against krippendorff on the full data).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CODES = (-1, 0, 1)  # b preferred, tie, a preferred: ordered, so ordinal metrics apply

IntArray = NDArray[np.int64]


def _category(code: NDArray) -> IntArray:
    return (np.asarray(code, dtype=np.int64) + 1).astype(np.int64)  # -1,0,1 -> 0,1,2


@dataclass(frozen=True)
class Pairs:
    """Every pair of labels two labelers gave to the same unit."""

    unit: IntArray
    labeler_i: IntArray
    labeler_j: IntArray
    code_i: IntArray
    code_j: IntArray
    index_i: IntArray  # position of each label in the input arrays
    index_j: IntArray

    def __len__(self) -> int:
        return int(self.unit.size)


def label_pairs(unit: NDArray, labeler: NDArray, code: NDArray) -> Pairs:
    """All within-unit pairs of labels, with ``labeler_i < labeler_j``."""
    unit = np.asarray(unit, dtype=np.int64)
    labeler = np.asarray(labeler, dtype=np.int64)
    code = np.asarray(code, dtype=np.int64)
    order = np.lexsort((labeler, unit))
    u, lab, c = unit[order], labeler[order], code[order]
    pieces: list[tuple[IntArray, IntArray]] = []
    n = u.size
    offset = 1
    while offset < n:
        same = u[offset:] == u[:-offset]
        if not same.any():
            break
        left = np.nonzero(same)[0]
        pieces.append((left, left + offset))
        offset += 1
    if pieces:
        left = np.concatenate([p[0] for p in pieces])
        right = np.concatenate([p[1] for p in pieces])
    else:
        left = right = np.zeros(0, dtype=np.int64)
    return Pairs(
        unit=u[left],
        labeler_i=lab[left],
        labeler_j=lab[right],
        code_i=c[left],
        code_j=c[right],
        index_i=order[left],
        index_j=order[right],
    )


@dataclass(frozen=True)
class Agreement:
    agreeing: int
    pairs: int

    @property
    def rate(self) -> float | None:
        return self.agreeing / self.pairs if self.pairs else None


def percent_agreement(pairs: Pairs, *, ties: str = "category") -> Agreement:
    """Share of label pairs on the same unit that agree (InstructGPT's inter-labeler agreement).

    ``ties="category"``: a tie is a third answer and agrees only with a tie.
    ``ties="exclude"``: pairs where either labeler said tie are left out.
    """
    same = pairs.code_i == pairs.code_j
    if ties == "exclude":
        keep = (pairs.code_i != 0) & (pairs.code_j != 0)
        return Agreement(int(same[keep].sum()), int(keep.sum()))
    if ties != "category":
        raise ValueError(f"ties: must be 'category' or 'exclude', got {ties!r}")
    return Agreement(int(same.sum()), len(pairs))


def grouped_agreement(group: NDArray, same: NDArray, n_groups: int) -> tuple[IntArray, IntArray]:
    """Agreeing and total pair counts per group id (for per-labeler, per-tag, per-version views)."""
    group = np.asarray(group, dtype=np.int64)
    agreeing = np.bincount(group, weights=np.asarray(same, dtype=np.float64), minlength=n_groups)
    total = np.bincount(group, minlength=n_groups)
    return agreeing.astype(np.int64), total.astype(np.int64)


def cohens_kappa_by_pair(pairs: Pairs, *, min_overlap: int = 1) -> dict[tuple[int, int], tuple[float | None, int]]:
    """Cohen's kappa for every labeler pair with at least ``min_overlap`` shared units.

    Same formula as ``sklearn.metrics.cohen_kappa_score`` (categories: b, tie, a), for all pairs
    in one pass. ``None`` where kappa is undefined (both labelers always gave one same answer).
    """
    if not len(pairs):
        return {}
    keys = pairs.labeler_i * (int(pairs.labeler_j.max()) + 1) + pairs.labeler_j
    uniq, pair_id = np.unique(keys, return_inverse=True)
    n_pairs = uniq.size
    ci, cj = _category(pairs.code_i), _category(pairs.code_j)
    confusion = np.bincount(pair_id * 9 + ci * 3 + cj, minlength=n_pairs * 9).reshape(n_pairs, 3, 3)
    n = confusion.sum(axis=(1, 2)).astype(np.float64)
    observed = np.trace(confusion, axis1=1, axis2=2) / n
    expected = (confusion.sum(axis=2) * confusion.sum(axis=1)).sum(axis=1) / n**2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (observed - expected) / (1.0 - expected)
    width = int(pairs.labeler_j.max()) + 1
    out: dict[tuple[int, int], tuple[float | None, int]] = {}
    for index in np.nonzero(n >= min_overlap)[0]:
        key = int(uniq[index])
        value = float(kappa[index]) if np.isfinite(kappa[index]) else None
        out[(key // width, key % width)] = (value, int(n[index]))
    return out


def category_table(unit: NDArray, code: NDArray) -> tuple[IntArray, IntArray]:
    """Units x categories counts (b, tie, a) and the unit ids in row order."""
    units, row = np.unique(np.asarray(unit, dtype=np.int64), return_inverse=True)
    table = np.bincount(row * 3 + _category(code), minlength=units.size * 3).reshape(units.size, 3)
    return table.astype(np.int64), units.astype(np.int64)


def fleiss_kappa(table: NDArray) -> float | None:
    """Fleiss' kappa (statsmodels) over the rows rated by the most common number of raters.

    ``None`` when fewer than two rows qualify or every rating falls in one category.
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

    table = np.asarray(table)
    raters = table.sum(axis=1)
    if table.shape[0] == 0:
        return None
    values, counts = np.unique(raters, return_counts=True)
    n = values[np.argmax(counts)]
    rows = table[raters == n]
    if n < 2 or rows.shape[0] < 2:
        return None
    totals = rows.sum(axis=0)
    if (totals > 0).sum() < 2:
        return None  # a single category: chance agreement is 1 and kappa is undefined
    return float(sm_fleiss_kappa(rows, method="fleiss"))


def krippendorff_alpha(value_counts: NDArray, *, level: str, value_domain: list[int]) -> float | None:
    """Krippendorff's alpha (krippendorff package) from units x values counts; any overlap,
    missing data allowed. ``None`` when undefined (fewer than two pairable values, one value only)."""
    import krippendorff

    counts = np.asarray(value_counts, dtype=np.float64)
    pairable = counts[counts.sum(axis=1) >= 2]
    if pairable.shape[0] == 0 or (pairable.sum(axis=0) > 0).sum() < 2:
        return None
    alpha = krippendorff.alpha(
        value_counts=pairable,
        value_domain=value_domain,
        level_of_measurement=level,  # type: ignore[arg-type]
    )
    return float(alpha)


def _distance(level: str, domain: NDArray, marginals: NDArray) -> NDArray:
    v = domain.astype(np.float64)
    if level == "nominal":
        return (v[:, None] != v[None, :]).astype(np.float64)
    if level == "interval":
        return (v[:, None] - v[None, :]) ** 2
    if level == "ordinal":
        # Krippendorff's ordinal metric: (sum_{g=c}^{k} n_g - (n_c + n_k) / 2)^2
        cum = np.concatenate([[0.0], np.cumsum(marginals)])
        lo = np.minimum.outer(np.arange(v.size), np.arange(v.size))
        hi = np.maximum.outer(np.arange(v.size), np.arange(v.size))
        spread = cum[hi + 1] - cum[lo] - (marginals[lo] + marginals[hi]) / 2
        return np.where(lo == hi, 0.0, spread**2)
    raise ValueError(f"level: unknown level of measurement {level!r}")


def coincidences(value_counts: NDArray) -> NDArray:
    """Krippendorff's coincidence matrix from units x values counts (pairable units only)."""
    counts = np.asarray(value_counts, dtype=np.float64)
    m = counts.sum(axis=1)
    keep = m >= 2
    counts, m = counts[keep], m[keep]
    weighted = counts / (m - 1)[:, None]
    o = weighted.T @ counts
    o -= np.diag(weighted.sum(axis=0))  # remove self-pairs: n_uc (n_uc - 1) on the diagonal
    return o


def alpha_from_coincidences(o: NDArray, *, level: str, value_domain: list[int]) -> float | None:
    """Krippendorff's alpha from a coincidence matrix: 1 - D_o / D_e."""
    marginals = o.sum(axis=0)
    n = marginals.sum()
    if n <= 1 or (marginals > 0).sum() < 2:
        return None
    delta = _distance(level, np.asarray(value_domain), marginals)
    observed = (o * delta).sum()
    expected = (np.outer(marginals, marginals) * delta).sum() / (n - 1)
    return float(1.0 - observed / expected) if expected > 0 else None


def kendalls_w(ranks: NDArray, group: NDArray) -> tuple[IntArray, NDArray]:
    """Kendall's W (with tie correction) per group of rankings over the same K items.

    ``ranks``: rankings x K, dense ranks with ties (1, 2, 2, 3); ``group``: the response set of
    each ranking. Returns (group ids, W); W is NaN for groups with fewer than two rankings or no
    spread at all (every labeler tied every response).
    """
    from scipy.stats import rankdata

    ranks = np.asarray(ranks, dtype=np.float64)
    midranks = rankdata(ranks, method="average", axis=1)  # W needs mid-ranks for ties
    k = ranks.shape[1]
    tie_term = np.zeros(ranks.shape[0])
    for value in range(1, k + 1):
        size = (ranks == value).sum(axis=1)
        tie_term += size**3 - size
    return kendalls_w_from_midranks(midranks, tie_term, np.asarray(group, dtype=np.int64))


def kendalls_w_from_midranks(midranks: NDArray, tie_term: NDArray, group: NDArray) -> tuple[IntArray, NDArray]:
    """Kendall's W per group from mid-ranks (rankings x K) and each ranking's sum of (t^3 - t)."""
    midranks = np.asarray(midranks, dtype=np.float64)
    group = np.asarray(group, dtype=np.int64)
    k = midranks.shape[1]
    order = np.argsort(group, kind="stable")
    g, midranks, tie_term = group[order], midranks[order], np.asarray(tie_term, dtype=np.float64)[order]
    ids, starts, m = np.unique(g, return_index=True, return_counts=True)
    column_sums = np.add.reduceat(midranks, starts, axis=0)  # (groups, K)
    mean = m * (k + 1) / 2.0
    s = ((column_sums - mean[:, None]) ** 2).sum(axis=1)
    denominator = m**2 * (k**3 - k) - m * np.add.reduceat(tie_term, starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((m >= 2) & (denominator > 0), 12.0 * s / denominator, np.nan)
    return ids.astype(np.int64), w


def kendall_tau_by_ranking_pair(pairs: Pairs, ranking: NDArray, k: int) -> NDArray:
    """Kendall's tau-b between every two rankings of the same set, from their comparisons.

    ``ranking`` gives the ranking id of each input label; a pair of rankings over K items shares
    C(K,2) units. Equals ``scipy.stats.kendalltau`` on the two rank vectors.
    """
    ranking = np.asarray(ranking, dtype=np.int64)
    if not len(pairs):
        return np.zeros(0)
    ri, rj = ranking[pairs.index_i], ranking[pairs.index_j]
    key = ri * (int(ranking.max()) + 1) + rj
    _, pair_id = np.unique(key, return_inverse=True)
    concordance = np.bincount(pair_id, weights=(pairs.code_i * pairs.code_j).astype(np.float64))
    ties_i = np.bincount(pair_id, weights=(pairs.code_i == 0).astype(np.float64))
    ties_j = np.bincount(pair_id, weights=(pairs.code_j == 0).astype(np.float64))
    n0 = k * (k - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = concordance / np.sqrt((n0 - ties_i) * (n0 - ties_j))
    return tau


def bootstrap_ci(
    per_cluster_numerator: NDArray,
    per_cluster_denominator: NDArray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of a ratio of sums, resampling clusters (response sets)."""
    num = np.asarray(per_cluster_numerator, dtype=np.float64)
    den = np.asarray(per_cluster_denominator, dtype=np.float64)
    n = num.size
    if n < 2 or den.sum() == 0:
        return None
    ratios = np.concatenate([(w @ num) / np.maximum(w @ den, 1e-12) for w in cluster_resamples(n, resamples, seed)])
    lo, hi = np.quantile(ratios, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def cluster_resamples(n: int, resamples: int, seed: int, batch: int = 50) -> Iterator[NDArray]:
    """Bootstrap weights (how often each of ``n`` clusters is drawn), ``batch`` resamples at a time."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        size = min(batch, resamples - done)
        # n draws with replacement, counted per cluster: the same distribution as a multinomial,
        # which numpy draws one category at a time (slow for tens of thousands of clusters).
        draws = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        yield np.bincount(draws.reshape(-1), minlength=size * n).reshape(size, n).astype(np.float64)
        done += size


def alpha_bootstrap_ci(
    per_cluster_coincidences: NDArray,
    *,
    level_of_measurement: str,
    value_domain: list[int],
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of Krippendorff's alpha, resampling clusters (response sets).

    ``per_cluster_coincidences``: clusters x V x V coincidence matrices (they add up over units).
    """
    per = np.asarray(per_cluster_coincidences, dtype=np.float64)
    n = per.shape[0]
    if n < 2:
        return None
    flat = per.reshape(n, -1)
    values = []
    for weights in cluster_resamples(n, resamples, seed):
        for o in (weights @ flat).reshape(-1, *per.shape[1:]):
            alpha = alpha_from_coincidences(o, level=level_of_measurement, value_domain=value_domain)
            if alpha is not None:
                values.append(alpha)
    if not values:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_all(
    ratios: list[tuple[NDArray, NDArray]],
    per_cluster_coincidences: NDArray,
    *,
    level_of_measurement: str,
    value_domain: list[int],
    resamples: int = 1000,
    alpha_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[list[tuple[float, float] | None], tuple[float, float] | None]:
    """Percentile bootstrap CIs of several ratios of sums and of Krippendorff's alpha from one set
    of cluster resamples (the same as calling ``bootstrap_ci`` / ``alpha_bootstrap_ci`` with one
    seed, drawn once)."""
    n = per_cluster_coincidences.shape[0]
    if n < 2:
        return [None] * len(ratios), None
    nums = np.stack([np.asarray(num, dtype=np.float64) for num, _ in ratios])  # (R, n)
    dens = np.stack([np.asarray(den, dtype=np.float64) for _, den in ratios])
    flat = per_cluster_coincidences.reshape(n, -1)
    ratio_values: list[NDArray] = []
    alphas: list[float] = []
    done = 0
    for weights in cluster_resamples(n, max(resamples, alpha_resamples), seed):
        ratio_values.append((weights @ nums.T) / np.maximum(weights @ dens.T, 1e-12))  # (batch, R)
        if done < alpha_resamples:
            for o in (weights[: alpha_resamples - done] @ flat).reshape(-1, *per_cluster_coincidences.shape[1:]):
                alpha = alpha_from_coincidences(o, level=level_of_measurement, value_domain=value_domain)
                if alpha is not None:
                    alphas.append(alpha)
        done += weights.shape[0]
    values = np.concatenate(ratio_values)[:resamples]
    bounds = [(1 - level) / 2, 1 - (1 - level) / 2]
    cis: list[tuple[float, float] | None] = []
    for index, (_, den) in enumerate(ratios):
        if np.asarray(den).sum() == 0:
            cis.append(None)
            continue
        lo, hi = np.quantile(values[:, index], bounds)
        cis.append((float(lo), float(hi)))
    alpha_ci = None
    if alphas:
        lo, hi = np.quantile(alphas, bounds)
        alpha_ci = (float(lo), float(hi))
    return cis, alpha_ci
