"""Reward model: grouped batching, weighting, training on a known rule, evaluation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf.training.config import ModelConfig, RewardModelConfig
from rlhf.training.reward import (
    build_reward_trainer,
    evaluate_reward_model,
    pack_groups,
    train_reward_model,
    training_groups,
)
from rlhf.training.rows import ComparisonRow
from tests.rlhf.training.conftest import make_comparisons


def _config(path: str, **kwargs) -> RewardModelConfig:
    defaults = {"learning_rate": 3e-3, "num_epochs": 2.0, "max_pairs_per_batch": 24, "logging_steps": 5}
    defaults.update(kwargs)
    return RewardModelConfig(model=ModelConfig(model_name_or_path=path, device="cpu"), **defaults)


def test_pack_groups_never_splits_a_ranking():
    pairs = [6, 3, 10, 1, 6]
    batches = pack_groups(pairs, 8, seed=0)
    assert sorted(g for b in batches for g in b) == list(range(len(pairs)))
    for batch in batches:
        assert sum(pairs[g] for g in batch) <= 8 or len(batch) == 1  # only an oversized ranking exceeds the cap


def test_training_groups_forward_each_response_once_with_weights_and_ties(tokenizer):
    rows = [
        ComparisonRow(prompt="p", chosen="a", rejected="b", group_id="g1"),
        ComparisonRow(prompt="p", chosen="a", rejected="c", group_id="g1", weight=3.0),
        ComparisonRow(prompt="p", chosen="b", rejected="c", group_id="g1", is_tie=True),
        ComparisonRow(prompt="q", chosen="x", rejected="y", group_id="g2", margin=2.0),
        ComparisonRow(prompt="q", chosen="x", rejected="z", group_id="g3", split="val"),
    ]
    groups, group_ids = training_groups(rows, tokenizer, _config("unused", use_margin=True))
    assert group_ids == ["g1", "g1", "g2"]  # tie and val row left out
    g1, g2 = groups
    assert len(g1["input_ids"]) == 3 and len(g2["input_ids"]) == 2  # a, b, c once each; x, y
    assert (g1["chosen_index"], g1["rejected_index"]) == ([0, 0], [1, 2])
    assert g1["weight"] == [0.25, 0.75] and g2["weight"] == [1.0]  # each ranking sums to 1
    assert g1["margin"] == [0.0, 0.0] and g2["margin"] == [2.0]
    with_ties, _ = training_groups(rows, tokenizer, _config("unused", include_ties=True))
    assert with_ties[0]["is_tie"] == [False, False, True]
    assert with_ties[0]["weight"] == [0.2, 0.6, 0.2]
    assert with_ties[0]["margin"] == [0.0, 0.0, 0.0]  # margins only with use_margin


def test_trainer_batches_hold_whole_rankings_and_forward_k_per_ranking(sft_policy, tmp_path):
    rows = make_comparisons(10, k=4)  # 6 pairs per ranking, 4 responses
    trainer, groups, _, _ = build_reward_trainer(_config(sft_policy, max_pairs_per_batch=13), rows, output_dir=tmp_path)
    by_sequence = {tuple(ids): g for g, group in enumerate(groups) for ids in group["input_ids"]}
    seen = 0
    for batch in trainer.get_train_dataloader():
        n_pairs = batch["chosen_index"].shape[0]
        assert n_pairs in (6, 12)  # two rankings fit under 13 pairs, never a part of one
        assert batch["input_ids"].shape[0] == n_pairs // 6 * 4  # K forwards per ranking, not 2 per pair
        owners = [
            by_sequence[tuple(row[mask.bool()].tolist())]
            for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
        ]
        for c, r in zip(batch["chosen_index"].tolist(), batch["rejected_index"].tolist(), strict=True):
            assert owners[c] == owners[r]  # a pair never mixes two rankings
        assert batch["weight"].sum().item() == pytest.approx(n_pairs / 6)
        seen += n_pairs
    assert seen == len(rows)


def test_reward_model_learns_known_rule(sft_policy, tmp_path):
    rows = make_comparisons(48, seed=0) + make_comparisons(16, seed=1, split="val")
    progress = []
    before = AutoModelForSequenceClassification.from_pretrained(sft_policy, num_labels=1)
    result = train_reward_model(
        _config(sft_policy),
        rows,
        output_dir=tmp_path / "rm",
        on_progress=lambda step, total, m: progress.append((step, total, m)),
    )
    m = result.metrics
    assert m["reward/accuracy"] >= 0.9
    assert set(m["reward/accuracy_by_tag"]) == {"even", "odd"}
    assert m["reward/mean_margin"] > 0
    assert m["reward/human_agreement"] == pytest.approx(0.75)
    assert m["reward/train_groups"] == 48 and m["reward/train_pairs"] == 48 * 6
    assert m["reward/loss_curve"][-1][1] < m["reward/loss_curve"][0][1]
    assert result.seed == 42
    assert progress[0][2]["reward/loss"] > 0 and progress[-1][0] == progress[-1][1]
    # InstructGPT init: same transformer as the SFT policy before training, new weights after.
    after = AutoModelForSequenceClassification.from_pretrained(result.model_path)
    w0 = before.transformer.h[0].attn.c_attn.weight
    assert not torch.allclose(w0, after.transformer.h[0].attn.c_attn.weight)
    # evaluate_reward_model on the saved model gives the same held-out numbers.
    val = [r for r in rows if r.split == "val"]
    again = evaluate_reward_model(result.model_path, val, device="cpu")
    assert again["reward/accuracy"] == pytest.approx(m["reward/accuracy"])
    assert again["reward/mean_margin"] == pytest.approx(m["reward/mean_margin"], abs=1e-4)


def test_reward_bad_input_names_the_field(sft_policy, tmp_path):
    with pytest.raises(ValueError, match=r"^rows: must not be empty$"):
        train_reward_model(_config(sft_policy), [], output_dir=tmp_path)
    ties = [ComparisonRow(prompt="p", chosen="a", rejected="b", group_id="g", is_tie=True)]
    with pytest.raises(ValueError, match=r"^rows: no training comparisons"):
        train_reward_model(_config(sft_policy), ties, output_dir=tmp_path)
    bad = [ComparisonRow(prompt="p", chosen="a", rejected="b", group_id="g", weight=-1.0)]
    with pytest.raises(ValueError, match=r"^rows\[0\].weight: must be >= 0$"):
        train_reward_model(_config(sft_policy), bad, output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^learning_rate: must be > 0$"):
        train_reward_model(_config(sft_policy, learning_rate=0.0), ties, output_dir=tmp_path)
