from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from annotation.quality.reliability import bradley_terry_scores, one_coin_dawid_skene


def _synthetic(n_units=3000, n_labelers=30, overlap=3, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.choice([-1, 1], n_units)
    skill = rng.uniform(0.55, 0.97, n_labelers)
    workers = np.stack([rng.choice(n_labelers, overlap, replace=False) for _ in range(n_units)])
    unit = np.repeat(np.arange(n_units), overlap)
    labeler = workers.reshape(-1)
    right = rng.random(unit.size) < skill[labeler]
    code = np.where(right, truth[unit], -truth[unit])
    return unit, labeler, code, skill


def test_recovers_planted_skill():
    unit, labeler, code, skill = _synthetic()
    fit = one_coin_dawid_skene(unit, labeler, code)
    assert list(fit.labeler) == list(range(30))
    assert spearmanr(fit.skill, skill).statistic > 0.9
    assert np.abs(fit.skill - skill).mean() < 0.05


def test_same_skills_as_crowd_kit():
    from crowdkit.aggregation import OneCoinDawidSkene

    unit, labeler, code, _ = _synthetic(n_units=800, n_labelers=12, seed=4)
    ours = one_coin_dawid_skene(unit, labeler, code, n_iter=100)
    frame = pd.DataFrame({"task": unit, "worker": labeler, "label": code + 1})
    theirs = OneCoinDawidSkene(n_iter=100).fit(frame).skills_.sort_index().to_numpy()
    assert spearmanr(ours.skill, theirs).statistic > 0.98
    assert np.abs(ours.skill - theirs).max() < 0.05


def test_bradley_terry_orders_items_and_is_symmetric():
    # 0 beats 1 three times, 1 beats 2 three times, 0 beats 2 once: 0 > 1 > 2.
    winner = np.array([0, 0, 0, 1, 1, 1, 0])
    loser = np.array([1, 1, 1, 2, 2, 2, 2])
    scores = bradley_terry_scores(winner, loser, np.ones(7), 3)
    assert scores[0] > scores[1] > scores[2]
    assert scores.mean() == pytest.approx(0.0, abs=1e-9)
    tied = bradley_terry_scores(np.array([0, 1]), np.array([1, 0]), np.ones(2), 2)
    assert tied[0] == pytest.approx(tied[1])
