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
    training_table,
)
from rlhf.training.rows import ComparisonRow
from tests.rlhf.training.conftest import make_comparisons


def _config(path: str, **kwargs) -> RewardModelConfig:
    defaults = {"learning_rate": 3e-3, "num_epochs": 2.0, "max_pairs_per_batch": 24, "logging_steps": 5}
    defaults.update(kwargs)
    return RewardModelConfig(model=ModelConfig(model_name_or_path=path, device="cpu"), **defaults)


def test_pack_groups_never_splits_a_ranking():
    ids = [g for g, n in [("a", 6), ("b", 3), ("c", 10), ("d", 1), ("e", 6)] for _ in range(n)]
    batches = pack_groups(ids, 8, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(ids)))
    for batch in batches:
        groups = {ids[i] for i in batch}
        for g in groups:
            assert sum(1 for i in batch if ids[i] == g) == ids.count(g)
        assert len(batch) <= 8 or len(groups) == 1  # only an oversized ranking exceeds the cap


def test_training_table_weights_and_ties(tokenizer):
    rows = [
        ComparisonRow(prompt="p", chosen="a", rejected="b", group_id="g1"),
        ComparisonRow(prompt="p", chosen="a", rejected="c", group_id="g1", weight=3.0),
        ComparisonRow(prompt="p", chosen="b", rejected="c", group_id="g1", is_tie=True),
        ComparisonRow(prompt="q", chosen="x", rejected="y", group_id="g2", margin=2.0),
        ComparisonRow(prompt="q", chosen="x", rejected="z", group_id="g3", split="val"),
    ]
    config = _config("unused", use_margin=True)
    table, group_ids = training_table(rows, tokenizer, config)
    assert group_ids == ["g1", "g1", "g2"]  # tie and val row left out
    assert table["weight"] == [0.25, 0.75, 1.0]  # each ranking sums to 1
    assert table["margin"] == [0.0, 0.0, 2.0]
    with_ties, _ = training_table(rows, tokenizer, _config("unused", include_ties=True))
    assert with_ties["is_tie"] == [False, False, True, False]
    assert with_ties["weight"] == [0.2, 0.6, 0.2, 1.0]


def test_trainer_batches_hold_whole_rankings(sft_policy, tmp_path):
    rows = make_comparisons(10, k=4)  # 6 pairs per ranking
    trainer, table, group_ids, _ = build_reward_trainer(
        _config(sft_policy, max_pairs_per_batch=13), rows, output_dir=tmp_path
    )
    by_row = {tuple(ids): gid for ids, gid in zip(table["chosen_ids"], group_ids, strict=True)}
    seen = 0
    for batch in trainer.get_train_dataloader():
        n = batch["input_ids"].shape[0] // 2
        assert n in (6, 12)  # two rankings fit under 13 pairs, never a part of one
        chosen = batch["input_ids"][:n]
        gids = []
        for row, mask in zip(chosen, batch["attention_mask"][:n], strict=True):
            gids.append(by_row[tuple(row[mask.bool()].tolist())])
        for g in set(gids):
            assert gids.count(g) == 6
        assert batch["weight"].sum().item() == pytest.approx(n / 6)
        seen += n
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
