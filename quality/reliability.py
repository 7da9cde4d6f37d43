"""Labeler reliability and per-set consensus, vectorised.

Reliability is the one-coin Dawid-Skene model (each labeler answers correctly with probability
``skill``, else uniformly among the other answers), fitted by EM over every comparison. crowd-kit's
``OneCoinDawidSkene`` fits the same model; it took 12 s for 900,000 labels on this machine, this
numpy version well under a second, and the tests check that both give the same skills.

Consensus per response set (a Bradley-Terry fit over each set's comparisons) is in
``report.compute_consensus``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Reliability:
    labeler: NDArray  # labeler ids
    skill: NDArray  # probability of giving the true answer
    n_labels: NDArray
    posterior: NDArray  # units x observed answers (in code order: b, tie, a as present)


def one_coin_dawid_skene(
    unit: NDArray, labeler: NDArray, code: NDArray, *, n_iter: int = 30, tol: float = 1e-5
) -> Reliability:
    """Fit each labeler's skill and each unit's answer distribution by EM."""
    unit = np.asarray(unit, dtype=np.int64)
    labeler = np.asarray(labeler, dtype=np.int64)
    observed, label = np.unique(np.asarray(code, dtype=np.int64), return_inverse=True)
    n_classes = max(int(observed.size), 2)  # a wrong answer is spread over the answers people gave
    units, u = np.unique(unit, return_inverse=True)
    labelers, w = np.unique(labeler, return_inverse=True)
    n_units, n_workers = units.size, labelers.size
    cell = u * n_classes + label
    counts = np.bincount(cell, minlength=n_units * n_classes).reshape(n_units, n_classes).astype(np.float64)
    posterior = counts / counts.sum(axis=1, keepdims=True)  # start from majority vote
    n_labels = np.bincount(w, minlength=n_workers).astype(np.float64)
    skill = np.full(n_workers, 0.7)
    for _ in range(n_iter):
        # M-step: skill = expected share of a labeler's answers that are the true one.
        hit = posterior.reshape(-1)[cell]
        skill_new = np.bincount(w, weights=hit, minlength=n_workers) / np.maximum(n_labels, 1)
        skill_new = np.clip(skill_new, 1e-4, 1 - 1e-4)
        priors = np.clip(posterior.mean(axis=0), 1e-6, None)
        # E-step: log P(true = c) = log prior_c + sum over labels of log P(label | c).
        log_right = np.log(skill_new)[w]
        log_wrong = np.log((1 - skill_new) / (n_classes - 1))[w]
        logp = np.tile(np.log(priors), (n_units, 1))
        wrong_total = np.bincount(u, weights=log_wrong, minlength=n_units)
        logp += wrong_total[:, None]
        logp += np.bincount(cell, weights=log_right - log_wrong, minlength=n_units * n_classes).reshape(
            n_units, n_classes
        )
        logp -= logp.max(axis=1, keepdims=True)
        posterior = np.exp(logp)
        posterior /= posterior.sum(axis=1, keepdims=True)
        done = np.abs(skill_new - skill).max() < tol
        skill = skill_new
        if done:
            break
    return Reliability(labeler=labelers, skill=skill, n_labels=n_labels.astype(np.int64), posterior=posterior)
