"""Held-out evaluation of a PPO policy: the candidate and the policy it started from answer the same
prompts with the same seed and sampling, and one reward model scores both."""

from __future__ import annotations

from typing import Any

from rlhf.training.config import GenerationConfig, ModelConfig, PPOConfig
from rlhf.training.generation import generate_responses
from rlhf.training.models import load_reward_model, render_conversation
from rlhf.training.reward import score_texts
from rlhf.training.rows import PromptRow
from rlhf.training.stats import win_rate


def policy_evaluate(
    *,
    candidate_path: str,
    baseline_path: str,
    reward_path: str,
    prompts: list[PromptRow],
    config: PPOConfig,
    samples_per_prompt: int = 4,
) -> dict[str, Any]:
    """Mean reward-model score of a candidate and a baseline policy on the same held-out prompts
    (same seed, same sampling), their win rate per prompt, and a sample table."""
    rows = prompts
    out: dict[str, Any] = {"prompts": len(rows), "samples_per_prompt": samples_per_prompt}
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=reward_path, device=config.device), lora=False)
    samples: list[dict[str, Any]] = []
    per_prompt: dict[str, list[float]] = {}
    reward_max_length = max(512, config.max_prompt_length + config.response_length + 8)
    for name, path in (("candidate", candidate_path), ("baseline", baseline_path)):
        generation = GenerationConfig(
            model=ModelConfig(model_name_or_path=path, device=config.device),
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.response_length,
            use_chat_template=config.use_chat_template,
            seed=config.seed,
        )
        # Several samples per prompt: one sample each makes the comparison a coin flip on small sets.
        groups = generate_responses(generation, rows, k=samples_per_prompt)
        # Read as PPO reads its rollouts: same template choice, EOS only on responses that ended.
        texts = [
            render_conversation(
                tokenizer, row.content, r.text, use_chat_template=config.use_chat_template, finished=r.finished
            )
            for row, group in zip(rows, groups, strict=True)
            for r in group
        ]
        scores = score_texts(model, tokenizer, texts, max_length=reward_max_length)
        k = samples_per_prompt
        means = [sum(scores[i : i + k]) / k for i in range(0, len(scores), k)]
        per_prompt[name] = means
        out[f"{name}_reward"] = sum(means) / len(means) if means else 0.0
        for index, (row, group) in enumerate(zip(rows, groups, strict=True)):
            if index >= 8:
                break
            score = scores[index * samples_per_prompt]
            if name == "candidate":
                samples.append({"prompt": row.text or row.messages, "response": group[0].text, "reward": score})
            else:
                samples[index].update({"baseline_response": group[0].text, "baseline_reward": score})
    out["win_rate"] = win_rate(zip(per_prompt["candidate"], per_prompt["baseline"], strict=True))
    out["samples"] = samples
    return out
