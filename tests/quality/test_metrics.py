"""Agreement statistics on published worked examples and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import kendalltau
from sklearn.metrics import cohen_kappa_score

from quality import metrics

# Wikipedia's Fleiss' kappa worked example: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers x 12 units,
# missing values; alpha nominal .743, ordinal .815, interval .849.
NAN = np.nan
KRIPPENDORFF_DATA = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


def _value_counts(data):
    domain = [1, 2, 3, 4, 5]
    return np.array([[np.sum(data[:, u] == v) for v in domain] for u in range(data.shape[1])]), domain


def test_fleiss_kappa_worked_example():
    assert round(metrics.fleiss_kappa(np.array(FLEISS_TABLE)), 3) == 0.210


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_worked_example(level, expected):
    counts, domain = _value_counts(KRIPPENDORFF_DATA)
    assert round(metrics.krippendorff_alpha(counts, level=level, value_domain=domain), 3) == expected
    # Our coincidence-matrix path (used by the bootstrap) gives the same number.
    o = metrics.coincidences(counts)
    assert metrics.alpha_from_coincidences(o, level=level, value_domain=domain) == pytest.approx(
        metrics.krippendorff_alpha(counts, level=level, value_domain=domain), abs=1e-12
    )


def test_cohens_kappa_worked_example_and_sklearn():
    # Wikipedia: 50 proposals; yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4.
    a = [1] * 20 + [1] * 5 + [-1] * 10 + [-1] * 15
    b = [1] * 20 + [-1] * 5 + [1] * 10 + [-1] * 15
    unit = list(range(50)) * 2
    pairs = metrics.label_pairs(unit, [0] * 50 + [1] * 50, a + b)
    kappa, n = metrics.cohens_kappa_by_pair(pairs)[(0, 1)]
    assert n == 50 and kappa == pytest.approx(0.4, abs=1e-12)
    rng = np.random.default_rng(1)
    x, y = rng.integers(-1, 2, 200), rng.integers(-1, 2, 200)
    pairs = metrics.label_pairs(list(range(200)) * 2, [3] * 200 + [7] * 200, np.concatenate([x, y]))
    assert metrics.cohens_kappa_by_pair(pairs)[(3, 7)][0] == pytest.approx(cohen_kappa_score(x, y), abs=1e-12)


def test_percent_agreement_counts_pairs_and_states_ties():
    # unit 0: a, a, b -> 1 of 3 pairs agree; unit 1: tie, tie -> 1 of 1; unit 2: one label (no pair).
    pairs = metrics.label_pairs([0, 0, 0, 1, 1, 2], [0, 1, 2, 0, 1, 0], [1, 1, -1, 0, 0, 1])
    assert len(pairs) == 4
    assert metrics.percent_agreement(pairs) == metrics.Agreement(agreeing=2, pairs=4)
    assert metrics.percent_agreement(pairs, ties="exclude") == metrics.Agreement(agreeing=1, pairs=3)


def test_kendalls_w_hand_computed_and_with_ties():
    # Three judges, four items, identical rankings -> W = 1; fully reversed pair -> lower.
    ranks = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [4, 3, 2, 1]])
    ids, w = metrics.kendalls_w(ranks, np.array([10, 10, 10, 20, 20]))
    assert list(ids) == [10, 20]
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx(0.0)  # two opposite rankings: column sums all equal
    # With ties, hand computed: rankings (1,2,2,3) and (1,2,3,3) -> mid-ranks (1,2.5,2.5,4) and
    # (1,2,3.5,3.5); R = (2,4.5,6,7.5), mean 5, S = 9+0.25+1+6.25 = 16.5;
    # T = (8-2) + (8-2) = 12; W = 12*16.5 / (4*60 - 2*12) = 198/216.
    _, w = metrics.kendalls_w(np.array([[1, 2, 2, 3], [1, 2, 3, 3]]), np.array([1, 1]))
    assert w[0] == pytest.approx(198 / 216)


def test_kendalls_w_edge_cases_are_defined():
    _, w = metrics.kendalls_w(np.array([[1, 2, 3]]), np.array([5]))
    assert math.isnan(w[0])  # one labeler
    _, w = metrics.kendalls_w(np.array([[1, 1, 1], [1, 1, 1]]), np.array([5, 5]))
    assert math.isnan(w[0])  # all ties: no spread to agree on


def test_kendall_tau_from_comparisons_matches_scipy():
    rng = np.random.default_rng(0)
    k = 5
    for _ in range(20):
        r1, r2 = rng.integers(1, 4, k), rng.integers(1, 4, k)
        unit, lab, code, ranking = [], [], [], []
        for index, (i, j) in enumerate((p, q) for p in range(k) for q in range(p + 1, k)):
            for labeler, r in ((0, r1), (1, r2)):
                unit.append(index)
                lab.append(labeler)
                code.append(int(np.sign(r[j] - r[i])))
                ranking.append(labeler)
        pairs = metrics.label_pairs(unit, lab, code)
        tau = metrics.kendall_tau_by_ranking_pair(pairs, np.array(ranking), k)
        expected = kendalltau(r1, r2).statistic
        if np.isnan(expected):
            assert np.isnan(tau[0])
        else:
            assert tau[0] == pytest.approx(expected, abs=1e-12)


def test_edge_cases_one_labeler_no_overlap_all_ties_perfect_single_category():
    # One labeler / no overlap: no pairs, nothing defined, nothing crashes.
    pairs = metrics.label_pairs([0, 1, 2], [0, 0, 1], [1, -1, 1])
    assert len(pairs) == 0
    assert metrics.percent_agreement(pairs).rate is None
    assert metrics.cohens_kappa_by_pair(pairs) == {}
    table, _ = metrics.category_table([0, 1, 2], [1, -1, 1])
    assert metrics.fleiss_kappa(table) is None
    assert metrics.krippendorff_alpha(table, level="ordinal", value_domain=[-1, 0, 1]) is None
    # All ties / a single category: agreement is perfect, kappa and alpha are undefined (None).
    pairs = metrics.label_pairs([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0])
    assert metrics.percent_agreement(pairs).rate == 1.0
    assert metrics.percent_agreement(pairs, ties="exclude").rate is None
    assert metrics.cohens_kappa_by_pair(pairs)[(0, 1)] == (None, 2)
    table, _ = metrics.category_table([0, 0, 1, 1], [0, 0, 0, 0])
    assert metrics.fleiss_kappa(table) is None
    assert metrics.krippendorff_alpha(table, level="ordinal", value_domain=[-1, 0, 1]) is None
    # Perfect agreement over two categories: kappa = alpha = 1.
    unit, lab, code = [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [1, 1, -1, -1, 1, 1]
    pairs = metrics.label_pairs(unit, lab, code)
    assert metrics.cohens_kappa_by_pair(pairs)[(0, 1)] == (1.0, 3)
    table, _ = metrics.category_table(unit, code)
    assert metrics.fleiss_kappa(table) == pytest.approx(1.0)
    assert metrics.krippendorff_alpha(table, level="ordinal", value_domain=[-1, 0, 1]) == pytest.approx(1.0)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(3)
    agreeing = rng.integers(0, 4, 500)
    total = np.full(500, 3)
    lo, hi = metrics.bootstrap_ci(agreeing, total, resamples=400, seed=1)
    estimate = agreeing.sum() / total.sum()
    assert lo < estimate < hi
    assert hi - lo < 0.1
    assert metrics.bootstrap_ci(agreeing[:1], total[:1]) is None


def test_bootstrap_all_equals_the_separate_bootstraps():
    rng = np.random.default_rng(5)
    n = 300
    agreeing, total = rng.integers(0, 4, n).astype(float), np.full(n, 3.0)
    per_o = rng.integers(0, 3, (n, 3, 3)).astype(float)
    per_o = per_o + per_o.transpose(0, 2, 1)
    (ci,), alpha_ci = metrics.bootstrap_all(
        [(agreeing, total)],
        per_o,
        level_of_measurement="ordinal",
        value_domain=[-1, 0, 1],
        resamples=400,
        alpha_resamples=120,
        seed=2,
    )
    assert ci == metrics.bootstrap_ci(agreeing, total, resamples=400, seed=2)
    assert alpha_ci == metrics.alpha_bootstrap_ci(
        per_o, level_of_measurement="ordinal", value_domain=[-1, 0, 1], resamples=120, seed=2
    )
