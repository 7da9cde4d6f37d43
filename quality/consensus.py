"""The consensus order of every response set: Bradley-Terry over its labelers' comparisons (pure
numpy, no Django)."""

from __future__ import annotations

import numpy as np

from quality.arrays import Labels, unique_rows


def compute_consensus(labels: Labels, k: int) -> dict[str, np.ndarray]:
    """Bradley-Terry per response set, all sets at once (MM iterations on sets x K x K arrays).

    Returns per set: ids, response ids (sets x K), scores, dense ranks, confidence (the share of
    the set's labels that agree with the consensus order), and per label whether it agrees."""
    keys = np.stack([np.concatenate([labels.set_id, labels.set_id]), np.concatenate([labels.a, labels.b])], axis=1)
    uniq, item = unique_rows(keys)
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
