from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from quality.arrays import Labels
from quality.consensus import compute_consensus
from quality.reliability import one_coin_dawid_skene


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


def _labels(set_id, a, b, code):
    n = len(code)
    arrays = [np.asarray(x, dtype=np.int64) for x in (set_id, a, b, code)]
    zeros = np.zeros(n, dtype=np.int64)
    return Labels(*arrays, labeler=np.arange(n), ranking=np.arange(n), version=zeros, day=zeros)


def test_bradley_terry_consensus_orders_items_and_is_symmetric():
    # Responses 10 < 11 < 12: 10 beats 11 three times, 11 beats 12 three times, 10 beats 12 once.
    consensus = compute_consensus(
        _labels([1] * 7, [10, 10, 10, 11, 11, 11, 10], [11, 11, 11, 12, 12, 12, 12], [1] * 7), k=3
    )
    scores = consensus["scores"][0]
    assert scores[0] > scores[1] > scores[2]
    assert scores.mean() == pytest.approx(0.0, abs=1e-9)
    assert list(consensus["ranks"][0]) == [1, 2, 3]
    assert consensus["confidence"][0] == 1.0
    # One win each way: the consensus is a tie, which neither decided label agrees with.
    tied = compute_consensus(_labels([2, 2], [20, 20], [21, 21], [1, -1]), k=2)
    assert tied["scores"][0][0] == pytest.approx(tied["scores"][0][1])
    assert list(tied["ranks"][0]) == [1, 1]
    assert tied["confidence"][0] == 0.0
