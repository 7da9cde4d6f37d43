"""Small figures over scores and votes, plain Python and numpy (no torch): the held-out evaluation
computes them, and the pages' selectors compute them again over stored samples without loading the
training stack. Win rates, Wilson intervals, McNemar's test, Bradley-Terry ratings on the Elo scale."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%
ELO_BASE, ELO_SCALE, ELO_MEAN = 10.0, 400.0, 1000.0  # Chatbot Arena's scale


def win_rate(pairs: Iterable[tuple[float, float]]) -> float | None:
    """The share of ``(a, b)`` score pairs where ``a`` wins, a tie counting half; None for no pairs."""
    points = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs]
    return sum(points) / len(points) if points else None


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for the share ``successes / n`` (ties may count half); (0, 1) for n = 0."""
    if n == 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n], got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_one_sided(new_only: int, old_only: int) -> float:
    """Exact one-sided McNemar p-value for "the old model is better": P(X >= old_only), X ~ Bin(d, 1/2).

    ``new_only`` / ``old_only`` count the pairs only the new / only the old model got right, d their sum.
    """
    if new_only < 0 or old_only < 0:
        raise ValueError(f"counts must be non-negative, got {new_only} and {old_only}")
    d = new_only + old_only
    if d == 0:
        return 1.0
    tail = sum(math.comb(d, k) for k in range(old_only, d + 1))
    return tail / (1 << d)  # 2**d; int / int rounds once, correctly, even where 2**d is past float range


def bradley_terry(
    votes: Sequence[tuple[str, str, float]],
    *,
    prior: float = 0.01,
    iterations: int = 10_000,
    tol: float = 1e-10,
) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale (mean 1000) from ``(a, b, score_of_a)`` votes.

    A score of 1 is a win for ``a``, 0 a win for ``b``, 0.5 a tie (half a win each). ``prior`` adds that
    many virtual ties between every model and a fixed anchor of log-strength 0, so a model that only
    wins or only loses stays finite. Fitted by Newton's method on the log-strengths (the logistic
    regression Chatbot Arena runs), stopping once no log-strength moves by more than ``tol``.
    Rating = 1000 + 400 * log10(strength), shifted so the ratings average 1000; empty votes give {}.
    """
    if prior <= 0:
        raise ValueError(f"prior must be positive (it keeps the ratings finite), got {prior}")
    models = sorted({m for a, b, _ in votes for m in (a, b)})
    if not models:
        return {}
    index = {m: i for i, m in enumerate(models)}
    wins = np.zeros((len(models), len(models)))  # wins[i, j]: i's score against j, a tie counting half
    for a, b, score in votes:
        if a == b or not 0.0 <= score <= 1.0:
            raise ValueError(f"a vote needs two models and a score in [0, 1], got {(a, b, score)}")
        wins[index[a], index[b]] += score
        wins[index[b], index[a]] += 1.0 - score
    games = wins + wins.T

    def log_likelihood(theta: FloatArray) -> float:
        log_p = -np.logaddexp(0.0, theta[None, :] - theta[:, None])  # log P(i beats j), (M, M)
        anchor = -np.logaddexp(0.0, -theta) - np.logaddexp(0.0, theta)  # log P(i beats / loses to anchor)
        return float((wins * log_p).sum() + prior / 2 * anchor.sum())

    theta = np.zeros(len(models))  # natural log-strengths
    for _ in range(iterations):
        p = _sigmoid(theta[:, None] - theta[None, :])  # (M, M)
        p_anchor = _sigmoid(theta)
        gradient = (wins - games * p).sum(axis=1) + prior * (0.5 - p_anchor)
        curvature = games * p * (1 - p)  # (M, M), zero on the diagonal
        # The anchor's term makes the Hessian negative definite, so the step always exists.
        hessian = curvature - np.diag(curvature.sum(axis=1) + prior * p_anchor * (1 - p_anchor))
        step = np.linalg.solve(hessian, -gradient)
        # Far from the optimum a full Newton step can overshoot: halve it until the likelihood rises.
        before, scale = log_likelihood(theta), 1.0
        while log_likelihood(theta + scale * step) < before and scale > 1e-12:
            scale /= 2
        theta = theta + scale * step
        if np.abs(scale * step).max() < tol:
            break

    ratings = ELO_SCALE * theta / math.log(ELO_BASE)
    ratings += ELO_MEAN - ratings.mean()
    return {m: float(r) for m, r in zip(models, ratings, strict=True)}


def bradley_terry_intervals(
    votes: Sequence[tuple[str, str, float]],
    *,
    groups: Sequence[Hashable] | None = None,
    resamples: int = 200,
    seed: int = 0,
    prior: float = 0.01,
) -> dict[str, tuple[float, float]]:
    """95% percentile bootstrap intervals of each model's Bradley-Terry rating.

    Resamples whole groups with replacement (``groups[i]`` is vote i's group, e.g. its prompt), else
    single votes. A model missing from a resample keeps the ratings of the resamples it appears in
    (and its point rating at both ends if it is missing from all of them).
    """
    if groups is None:
        groups = range(len(votes))
    if len(groups) != len(votes):
        raise ValueError(f"one group per vote: {len(groups)} groups for {len(votes)} votes")
    by_group: dict[Hashable, list[tuple[str, str, float]]] = {}
    for vote, group in zip(votes, groups, strict=True):
        by_group.setdefault(group, []).append(vote)
    blocks = list(by_group.values())  # in order of first appearance, so the seed fixes the draws

    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for a, b, _ in votes for m in (a, b)}
    for _ in range(resamples):
        drawn = [vote for block in rng.choices(blocks, k=len(blocks)) for vote in block]
        for model, rating in bradley_terry(drawn, prior=prior).items():
            samples[model].append(rating)

    point = bradley_terry(votes, prior=prior)
    return {
        m: (_percentile(s, 0.025), _percentile(s, 0.975)) if s else (point[m], point[m]) for m, s in samples.items()
    }


def bt_win_probability(rating_a: float, rating_b: float) -> float:
    """The Bradley-Terry chance that the model rated ``rating_a`` beats the one rated ``rating_b``."""
    return 1.0 / (1.0 + math.pow(ELO_BASE, (rating_b - rating_a) / ELO_SCALE))


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile by linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _sigmoid(x: FloatArray) -> FloatArray:
    """The logistic function, 1 / (1 + e^-x)."""
    return np.exp(-np.logaddexp(0.0, -x))
