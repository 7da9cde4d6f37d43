"""Held-out evaluation of a PPO policy: the candidate and the policy it started from answer the same
prompts with the same seed and sampling, and reward models score both: the one PPO optimised and,
when there is one, a judge it was not optimised against."""

from __future__ import annotations

from typing import Any

from rlhf.training.config import GenerationConfig, ModelConfig, PPOConfig
from rlhf.training.generation import generate_responses
from rlhf.training.models import load_reward_model, render_conversation
from rlhf.training.reward import score_texts
from rlhf.training.rows import GeneratedResponse, PromptRow
from rlhf.training.stats import win_rate

SAMPLE_ROWS = 8


def policy_evaluate(
    *,
    candidate_path: str,
    baseline_path: str,
    reward_path: str,
    prompts: list[PromptRow],
    config: PPOConfig,
    samples_per_prompt: int = 4,
    judge_path: str | None = None,
) -> dict[str, Any]:
    """Mean reward-model score of a candidate and a baseline policy on the same held-out prompts
    (same seed, same sampling), their win rate per prompt, and a sample table; with ``judge_path``
    the same figures from that reward model too (``judge_candidate_reward``, ``judge_baseline_reward``,
    ``judge_win_rate``), and the sample table shows the judge's scores."""
    rows = prompts
    out: dict[str, Any] = {"prompts": len(rows), "samples_per_prompt": samples_per_prompt}
    answers: dict[str, list[list[GeneratedResponse]]] = {}
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
        answers[name] = generate_responses(generation, rows, k=samples_per_prompt)
    scorers = [("", reward_path)] + ([("judge_", judge_path)] if judge_path else [])
    shown: dict[str, list[float]] = {}
    for prefix, path in scorers:
        scores = _scores(path, rows, answers, config)
        per_prompt = {name: _means(values, samples_per_prompt) for name, values in scores.items()}
        for name, means in per_prompt.items():
            out[f"{prefix}{name}_reward"] = sum(means) / len(means) if means else 0.0
        out[f"{prefix}win_rate"] = win_rate(zip(per_prompt["candidate"], per_prompt["baseline"], strict=True))
        shown = scores  # the judge's, when there is one
    out["samples"] = [
        {
            "prompt": row.text or row.messages,
            "response": answers["candidate"][index][0].text,
            "reward": shown["candidate"][index * samples_per_prompt],
            "baseline_response": answers["baseline"][index][0].text,
            "baseline_reward": shown["baseline"][index * samples_per_prompt],
        }
        for index, row in enumerate(rows[:SAMPLE_ROWS])
    ]
    return out


def _scores(
    reward_path: str, rows: list[PromptRow], answers: dict[str, list[list[GeneratedResponse]]], config: PPOConfig
) -> dict[str, list[float]]:
    """Each policy's answers scored by one reward model, read as PPO reads its rollouts: the same
    template choice, EOS only on responses that ended."""
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=reward_path, device=config.device), lora=False)
    reward_max_length = max(512, config.max_prompt_length + config.response_length + 8)
    out = {}
    for name, groups in answers.items():
        texts = [
            render_conversation(
                tokenizer, row.content, r.text, use_chat_template=config.use_chat_template, finished=r.finished
            )
            for row, group in zip(rows, groups, strict=True)
            for r in group
        ]
        out[name] = score_texts(model, tokenizer, texts, max_length=reward_max_length)
    return out


def _means(scores: list[float], k: int) -> list[float]:
    return [sum(scores[i : i + k]) / k for i in range(0, len(scores), k)]
