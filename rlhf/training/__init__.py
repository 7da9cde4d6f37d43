"""Training core: K-sample generation, the reward model and our own PPO. Plain Python + torch.

No Django import anywhere in this package (a test enforces it). The Django side hands in plain
rows and a config, and gets back paths and metrics. Stable entry points:

- config: frozen `ModelConfig`, `GenerationConfig`, `RewardModelConfig`, `PPOConfig`, each with
  help text on every field, `to_dict()` / `from_dict()` (JSON) and `validate()` raising
  ValueError("<field>: <what is wrong>").
- `generate_responses(config: GenerationConfig, prompts: list[PromptRow], *, k)
  -> list[list[GeneratedResponse]]`: k samples per prompt, with the exact settings.
- `train_reward_model(config: RewardModelConfig, rows: list[ComparisonRow], *, output_dir,
  on_progress=None) -> RewardResult`: trl RewardTrainer, whole rankings per batch, equal weight
  per ranking; metrics reward/accuracy, reward/accuracy_by_tag, reward/mean_margin,
  reward/human_agreement (when rows carry it), reward/loss_curve.
- `evaluate_reward_model(model_path, rows, *, batch_size=32, max_length=512, device="auto")
  -> dict`: the same held-out metrics for a saved reward model.
- `policy_evaluate(candidate_path=, baseline_path=, reward_path=, prompts=, config=) -> dict`: the
  held-out comparison of a PPO policy with the one it started from (mean reward, win rate, samples).
- `run_ppo(config: PPOConfig, prompts, *, policy_path, ref_path, reward_path, output_dir,
  sft_rows=None, on_progress=None, resume=True) -> PPOResult`: PPO with a per-token KL penalty
  to the SFT reference and optional PPO-ptx; metrics ppo/reward, ppo/kl, ppo/entropy,
  ppo/clipfrac, ppo/approx_kl, ppo/value_loss, ...; resumes from output_dir/checkpoint.pt.
- `on_progress(step, total, metrics)` callbacks receive namespaced metric keys.
- `tiny`: `build_tiny_tokenizer()`, `build_tiny_policy(dir)`, `build_tiny_reward_model(dir)`,
  `train_demo_sft(output_dir, quick=False)` (offline, bundled corpus in data/instructions.jsonl).

Heavy modules (torch, transformers, trl) are imported lazily, on first use of a name.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlhf.training.config import GenerationConfig, ModelConfig, PPOConfig, RewardModelConfig
from rlhf.training.rows import (
    ComparisonRow,
    GeneratedResponse,
    PPOResult,
    ProgressCallback,
    PromptRow,
    RewardResult,
)

_LAZY = {
    "generate_responses": "rlhf.training.generation",
    "train_reward_model": "rlhf.training.reward",
    "evaluate_reward_model": "rlhf.training.reward",
    "policy_evaluate": "rlhf.training.evaluation",
    "run_ppo": "rlhf.training.ppo",
    "train_demo_sft": "rlhf.training.tiny",
    "build_tiny_tokenizer": "rlhf.training.tiny",
    "build_tiny_policy": "rlhf.training.tiny",
    "build_tiny_reward_model": "rlhf.training.tiny",
}

__all__ = [
    "ComparisonRow",
    "GeneratedResponse",
    "GenerationConfig",
    "ModelConfig",
    "PPOConfig",
    "PPOResult",
    "ProgressCallback",
    "PromptRow",
    "RewardModelConfig",
    "RewardResult",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
