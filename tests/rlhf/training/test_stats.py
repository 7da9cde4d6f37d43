"""The figures behind the held-out evaluation, the compare page and the leaderboard, by hand."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import choix
import numpy as np
import pytest

from rlhf.training.stats import (
    bradley_terry,
    bradley_terry_intervals,
    bt_win_probability,
    mcnemar_one_sided,
    wilson_interval,
    win_rate,
)


def test_a_win_counts_one_a_tie_half_a_loss_nothing():
    assert win_rate([(0.9, 0.1), (0.5, 0.5), (0.2, 0.3), (1.0, 0.0)]) == (1 + 0.5 + 0 + 1) / 4
    assert win_rate(iter([(0.0, 1.0)])) == 0.0
    assert win_rate([]) is None


def test_the_pages_get_it_without_the_training_stack():
    """The selectors import it in the web process, which does not load torch."""
    code = "import sys, rlhf.training.stats; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout == "False\n"


# --- Wilson --------------------------------------------------------------------------------------


def test_wilson_7_of_10_matches_the_closed_form():
    # p = 0.7, n = 10, z = 1.96: z^2 = 3.8416, 1 + z^2/n = 1.38416
    centre = (0.7 + 3.8416 / 20) / 1.38416  # 0.89208 / 1.38416
    half = 1.96 / 1.38416 * math.sqrt(0.7 * 0.3 / 10 + 3.8416 / 400)  # sqrt(0.021 + 0.009604)
    low, high = wilson_interval(7, 10, z=1.96)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-15)
    assert (low, high) == pytest.approx((0.3967732, 0.8922107), abs=1e-7)
    # The default z is the exact 97.5% normal quantile, 1.959963984540054.
    assert wilson_interval(7, 10) == pytest.approx((0.3967781, 0.8922087), abs=1e-7)


def test_wilson_counts_ties_half_and_knows_nothing_without_trials():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # 2.5 of 5 (two wins, one tie): centred on 1/2; half-width z/(1+z^2/5) * sqrt(0.25/5 + z^2/100)
    low, high = wilson_interval(2.5, 5, z=1.96)
    half = 1.96 / (1 + 3.8416 / 5) * math.sqrt(0.25 / 5 + 3.8416 / 100)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-15)
    assert (low, high) == pytest.approx((0.1704202, 0.8295798), abs=1e-7)
    # At 0 of n and n of n the closed form touches 0 and 1; rounding steps past them, the clamp holds.
    assert wilson_interval(0, 27)[0] == 0.0  # unclamped: -6.9e-18
    assert wilson_interval(16, 16)[1] == 1.0  # unclamped: 1.0000000000000002
    with pytest.raises(ValueError, match="successes must lie in"):
        wilson_interval(11, 10)


# --- McNemar -------------------------------------------------------------------------------------


def test_mcnemar_is_the_exact_binomial_tail():
    # d = 10: P(X >= 8) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = (45 + 10 + 1) / 1024
    assert mcnemar_one_sided(new_only=2, old_only=8) == 56 / 1024 == 0.0546875
    # P(X >= 2) = 1 - (C(10,0) + C(10,1)) / 1024
    assert mcnemar_one_sided(new_only=8, old_only=2) == 1013 / 1024
    assert mcnemar_one_sided(new_only=0, old_only=3) == 1 / 8
    assert mcnemar_one_sided(new_only=0, old_only=0) == 1.0
    assert mcnemar_one_sided(new_only=5, old_only=0) == 1.0


# --- Bradley-Terry -------------------------------------------------------------------------------


def bradley_terry_by_choix(votes, *, prior, factor):
    """The same fit by choix's ILSR, an independent solver that only takes whole wins.

    Multiplying the likelihood by ``factor`` turns a tie into factor/2 wins each way and each model's
    ``prior`` virtual ties with the anchor into prior*factor/2 wins each way against an extra item.
    """
    models = sorted({m for a, b, _ in votes for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    anchor = len(models)
    data = []
    for a, b, score in votes:
        won = round(score * factor)
        data += [(index[a], index[b])] * won + [(index[b], index[a])] * (factor - won)
    per_side = round(prior * factor / 2)
    assert per_side == prior * factor / 2
    for i in range(len(models)):
        data += [(i, anchor)] * per_side + [(anchor, i)] * per_side
    theta = choix.ilsr_pairwise(len(models) + 1, data, max_iter=100_000, tol=1e-13)[:anchor]
    ratings = 400 * theta / math.log(10)
    ratings += 1000 - ratings.mean()
    return dict(zip(models, ratings.tolist(), strict=True))


MIXED = [
    ("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 1.0), ("b", "c", 1.0), ("c", "b", 1.0), ("c", "a", 1.0),
    ("a", "c", 1.0), ("a", "c", 1.0), ("d", "a", 1.0), ("b", "d", 1.0), ("c", "d", 1.0), ("d", "c", 1.0),
    ("a", "d", 0.0),
]  # fmt: skip


def test_bradley_terry_matches_choix_without_ties():
    ratings = bradley_terry(MIXED, prior=0.5)
    assert ratings == pytest.approx(bradley_terry_by_choix(MIXED, prior=0.5, factor=4), abs=1e-8)
    assert ratings == pytest.approx({"a": 995.8043273, "b": 993.8539723, "c": 962.5759992, "d": 1047.7657011})
    assert sum(ratings.values()) / 4 == pytest.approx(1000, abs=1e-9)


def test_bradley_terry_matches_choix_with_ties_and_the_default_prior():
    votes = [*MIXED, ("a", "b", 0.5), ("c", "d", 0.5), ("c", "d", 0.5), ("b", "d", 0.5)]
    ratings = bradley_terry(votes)
    assert ratings == pytest.approx(bradley_terry_by_choix(votes, prior=0.01, factor=200), abs=1e-7)


def test_a_tie_is_half_a_win_each():
    others = [("a", "c", 1.0)] * 3 + [("b", "c", 0.0)]
    two_ties = bradley_terry([("a", "b", 0.5), ("a", "b", 0.5), *others])
    win_and_loss = bradley_terry([("a", "b", 1.0), ("a", "b", 0.0), *others])
    assert two_ties == pytest.approx(win_and_loss, abs=1e-9)
    assert max(two_ties, key=two_ties.__getitem__) == "a"


def test_two_models_that_only_tie_are_rated_the_same():
    assert bradley_terry([("a", "b", 0.5)] * 4) == pytest.approx({"a": 1000.0, "b": 1000.0}, abs=1e-9)


def test_a_symmetric_cycle_rates_everyone_1000():
    cycle = [("a", "b", 1.0), ("b", "c", 1.0), ("c", "a", 1.0)]
    assert bradley_terry(cycle) == pytest.approx({"a": 1000.0, "b": 1000.0, "c": 1000.0}, abs=1e-9)
    assert bradley_terry([]) == {}


def test_a_model_that_only_wins_stays_finite_and_on_top():
    chain = [("a", "b", 1.0)] * 5 + [("c", "b", 0.0)] * 5  # a beats b five times, b beats c five times
    ratings = bradley_terry(chain)
    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["a"] > ratings["b"] > ratings["c"]
    assert ratings["b"] == pytest.approx(1000.0, abs=1e-9)  # the chain is symmetric about b
    assert ratings == pytest.approx(bradley_terry_by_choix(chain, prior=0.01, factor=200), abs=1e-7)
    assert ratings["a"] == pytest.approx(2200.1736310, abs=1e-6)
    # A bigger prior pulls the ends towards the middle.
    assert bradley_terry(chain, prior=1.0)["a"] < ratings["a"]


def test_bradley_terry_refuses_what_it_cannot_rate():
    with pytest.raises(ValueError, match="prior must be positive"):
        bradley_terry([("a", "b", 1.0)], prior=0.0)
    with pytest.raises(ValueError, match="a vote needs two models and a score in"):
        bradley_terry([("a", "a", 1.0)])
    with pytest.raises(ValueError, match="a vote needs two models and a score in"):
        bradley_terry([("a", "b", 2.0)])


def test_the_win_probability_is_the_elo_curve():
    assert bt_win_probability(1000, 1000) == 0.5
    assert bt_win_probability(1400, 1000) == pytest.approx(10 / 11, abs=1e-15)
    assert bt_win_probability(1000, 1400) == pytest.approx(1 / 11, abs=1e-15)
    # The fitted ratings give back the observed share of wins (a weak prior barely moves it).
    ratings = bradley_terry([("a", "b", 1.0)] * 3 + [("a", "b", 0.0)], prior=1e-6)
    assert bt_win_probability(ratings["a"], ratings["b"]) == pytest.approx(0.75, abs=1e-6)


# --- Bootstrap intervals -------------------------------------------------------------------------


def noisy_votes():
    rng = random.Random(7)
    strength = {"a": 1.0, "b": 0.3, "c": 0.0, "d": -0.8}
    votes = []
    for _ in range(120):
        a, b = rng.sample(sorted(strength), 2)
        u = rng.random()
        p = 1 / (1 + math.exp(strength[b] - strength[a]))
        votes.append((a, b, 0.5 if u < 0.1 else 1.0 if u < 0.1 + 0.9 * p else 0.0))
    return votes


def test_bootstrap_intervals_are_reproducible_and_hold_the_point_rating():
    votes = noisy_votes()
    groups = [i // 3 for i in range(len(votes))]  # three votes per prompt
    intervals = bradley_terry_intervals(votes, groups=groups, seed=3)
    assert intervals == bradley_terry_intervals(votes, groups=groups, seed=3)
    assert intervals != bradley_terry_intervals(votes, groups=groups, seed=4)
    point = bradley_terry(votes)
    assert set(intervals) == set(point)
    for model, (low, high) in intervals.items():
        assert low < point[model] < high
        assert high - low < 400


def test_the_bootstrap_is_the_percentile_bootstrap_over_votes():
    """Written out: draw the votes with replacement, refit, take the 2.5% and 97.5% points."""
    votes = noisy_votes()
    rng = random.Random(0)
    fits = [bradley_terry(rng.choices(votes, k=len(votes))) for _ in range(50)]
    intervals = bradley_terry_intervals(votes, resamples=50)
    assert sorted(intervals) == ["a", "b", "c", "d"]
    for model, interval in intervals.items():
        assert interval == pytest.approx(np.percentile([fit[model] for fit in fits], [2.5, 97.5]), abs=1e-9)


def test_the_bootstrap_resamples_whole_groups():
    votes = noisy_votes()
    # One group: every resample is the whole data set, so each interval shrinks to the point rating.
    point = bradley_terry(votes)
    intervals = bradley_terry_intervals(votes, groups=["one prompt"] * len(votes), resamples=5)
    assert sorted(intervals) == sorted(point)
    for model, interval in intervals.items():
        assert interval == pytest.approx((point[model], point[model]), abs=1e-9)
    assert bradley_terry_intervals([]) == {}
    with pytest.raises(ValueError, match="one group per vote: 2 groups for 120 votes"):
        bradley_terry_intervals(votes, groups=[0, 1])


def test_a_model_missing_from_a_resample_keeps_the_others():
    # "e" is in one prompt of forty, so most resamples lack it; it still gets an interval.
    votes = [*noisy_votes(), ("e", "a", 1.0)]
    groups = [i // 3 for i in range(len(votes) - 1)] + [40]
    intervals = bradley_terry_intervals(votes, groups=groups, resamples=100)
    assert set(intervals) == {"a", "b", "c", "d", "e"}
    low, high = intervals["e"]
    assert math.isfinite(low) and low <= high
