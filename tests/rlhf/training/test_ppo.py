"""Our PPO on a tiny policy: a synthetic reward rises, KL stays bounded, resume, PPO-ptx."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.training.config import PPOConfig
from rlhf.training.ppo import response_mask, run_ppo
from rlhf.training.reward import train_reward_model
from rlhf.training.rows import PromptRow
from rlhf.training.tiny import demo_sft_rows, load_corpus

PROMPTS = [PromptRow(id=str(i), text=r["instruction"]) for i, r in enumerate(load_corpus()[:48])]


def _target_reward(policy_path: str):
    """Reward = share of response tokens that are the token ' is' (a synthetic, known target)."""
    target = AutoTokenizer.from_pretrained(policy_path)(" is")["input_ids"][0]

    def reward_fn(response: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((response == target).float() * mask).sum(1) / mask.sum(1)

    return reward_fn


def _config(**kwargs) -> PPOConfig:
    defaults = {
        "total_episodes": 16 * 10,
        "batch_size": 16,
        "mini_batch_size": 8,
        "num_ppo_epochs": 2,
        "response_length": 10,
        "learning_rate": 3e-3,
        "device": "cpu",
        "value_model": "head",
        "missing_eos_penalty": 0.0,
        "kl_coef": 0.02,
    }
    defaults.update(kwargs)
    return PPOConfig(**defaults)


def test_response_mask_includes_first_eos_only():
    response = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 8]])
    assert response_mask(response, 0).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_ppo_raises_a_synthetic_reward_with_bounded_kl(sft_policy, tmp_path):
    history = []
    result = run_ppo(
        _config(total_episodes=16 * 15),
        PROMPTS,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=None,
        output_dir=tmp_path,
        reward_fn=_target_reward(sft_policy),
        on_progress=lambda step, total, m: history.append((step, total, m)),
    )
    rewards = [m["ppo/reward"] for _, _, m in history]
    assert [s for s, _, _ in history] == list(range(1, 16)) and history[0][1] == 15
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2 + 0.2
    assert all(m["ppo/kl"] < 40 for _, _, m in history)
    for key in ("ppo/kl", "ppo/entropy", "ppo/clipfrac", "ppo/approx_kl", "ppo/value_loss"):
        assert key in result.metrics
    assert len(result.metrics["ppo/history"]) == 15 and result.seed == 42
    assert {"prompt", "response", "reward"} <= set(result.samples[0])
    before = AutoModelForCausalLM.from_pretrained(sft_policy)
    after = AutoModelForCausalLM.from_pretrained(result.model_path)
    assert not torch.allclose(before.lm_head.weight, after.lm_head.weight)


def test_large_beta_keeps_the_policy_near_the_reference(sft_policy, tmp_path):
    history = []
    run_ppo(
        _config(kl_coef=5.0, total_episodes=16 * 8),
        PROMPTS,
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=None,
        output_dir=tmp_path,
        reward_fn=_target_reward(sft_policy),
        on_progress=lambda s, t, m: history.append(m),
    )
    # With beta = 0.02 the same run drives the reward above 0.4 and the KL past 10 nats.
    assert max(abs(m["ppo/kl"]) for m in history) < 5.0
    assert sum(m["ppo/reward"] for m in history[-3:]) / 3 < 0.2


def test_ppo_with_reward_model_value_model_ptx_and_resume(sft_policy, tmp_path):
    from rlhf.training.config import ModelConfig, RewardModelConfig
    from tests.rlhf.training.conftest import make_comparisons

    rm = train_reward_model(
        RewardModelConfig(
            model=ModelConfig(model_name_or_path=sft_policy, device="cpu"), learning_rate=3e-3, max_pairs_per_batch=24
        ),
        make_comparisons(8),
        output_dir=tmp_path / "rm",
    ).model_path
    config = _config(
        total_episodes=8 * 3,
        batch_size=8,
        mini_batch_size=4,
        gradient_accumulation_steps=2,
        num_ppo_epochs=1,
        value_model="reward",
        ptx_coef=1.0,
        adaptive_kl=True,
        save_every=1,
        missing_eos_penalty=1.0,
    )
    kwargs = dict(
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=rm,
        output_dir=tmp_path / "ppo",
        sft_rows=demo_sft_rows(16),
    )

    def crash_after_two(step, total, metrics):
        if step == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match=r"worker lost"):
        run_ppo(config, PROMPTS, on_progress=crash_after_two, **kwargs)
    assert (tmp_path / "ppo" / "checkpoint.pt").exists()
    steps = []
    result = run_ppo(config, PROMPTS, on_progress=lambda s, t, m: steps.append((s, m)), **kwargs)
    assert [s for s, _ in steps] == [3]  # resumed after step 2
    assert len(result.metrics["ppo/history"]) == 3
    assert "ppo/ptx_loss" in result.metrics and result.metrics["ppo/ptx_loss"] > 0
    assert result.metrics["ppo/kl_coef"] != pytest.approx(0.02)  # adaptive controller moved it
    assert not (tmp_path / "ppo" / "checkpoint.pt").exists()


def test_ppo_bad_input_names_the_field(sft_policy, tmp_path, random_policy):
    kwargs = dict(
        policy_path=sft_policy,
        ref_path=sft_policy,
        reward_path=None,
        output_dir=tmp_path,
        reward_fn=_target_reward(sft_policy),
    )
    with pytest.raises(ValueError, match=r"^response_length: must be > 0$"):
        run_ppo(_config(response_length=0), PROMPTS, **kwargs)
    with pytest.raises(ValueError, match=r"^prompts: must not be empty$"):
        run_ppo(_config(), [], **kwargs)
    with pytest.raises(ValueError, match=r"^sft_rows: required when ptx_coef > 0"):
        run_ppo(_config(ptx_coef=27.8), PROMPTS, **kwargs)
    with pytest.raises(ValueError, match=r"^reward_path: required"):
        run_ppo(_config(), PROMPTS, **{**kwargs, "reward_fn": None})
    from rlhf.training.tiny import build_tiny_policy, build_tiny_tokenizer

    other = build_tiny_policy(tmp_path / "other", tokenizer=build_tiny_tokenizer(vocab_size=400))
    with pytest.raises(ValueError, match=r"^ref_path: tokenizer differs"):
        run_ppo(_config(), PROMPTS, **{**kwargs, "ref_path": other})
