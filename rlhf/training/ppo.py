"""PPO on a causal-LM policy against a reward model, with a per-token KL penalty to the SFT model.

Reads top to bottom like CleanRL's ppo.py. One PPO step:
  1. rollout: the policy samples a response to each prompt of the batch;
  2. score: reward model at the end of the response (minus a penalty when it never ended),
     per-token KL to the frozen reference, values from the value model;
  3. rewards = -beta * KL per token, + score on the last token; GAE; whiten advantages;
  4. several epochs over minibatches: clipped policy loss + vf_coef * clipped value loss
     (+ ptx_coef * LM loss on SFT rows: InstructGPT's PPO-ptx), gradient accumulation;
  5. adapt beta (optional), report metrics, checkpoint.
Shapes: B = rollout batch, P = prompt tokens (left-padded), R = response tokens (right-padded).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import transformers
from accelerate import Accelerator
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf.training.config import PPOConfig
from rlhf.training.generation import validate_prompts
from rlhf.training.losses import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from rlhf.training.models import (
    check_same_tokenizer,
    check_tokenizer_matches,
    load_tokenizer,
    render_prompt,
    resolve_device,
    resolve_dtype,
)
from rlhf.training.rows import PPOResult, ProgressCallback, PromptRow
from rlhf.training.tiny import sft_batch

logger = logging.getLogger(__name__)

# A synthetic reward for tests and benchmarks: (response_ids (B, R), mask (B, R)) -> scores (B,).
RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CHECKPOINT = "checkpoint.pt"


# ----------------------------------------------------------------------------- model helpers


def disable_dropout(model: nn.Module) -> None:
    """PPO ratios need the same network at rollout and update time: no dropout."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as generate() uses: (B, T) -> (B, T)."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def forward_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, hidden: bool = False
) -> Any:
    """Causal-LM forward over prompt + response with padding-aware positions."""
    return model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        output_hidden_states=hidden,
        use_cache=False,
    )


def scalar_head_outputs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A sequence classifier's scalar head at every position: (B, T) -> (B, T).

    The reward is this at the last real token; the value of the state before token t is this
    at t-1 (trl's get_reward does the same).
    """
    backbone = getattr(model, model.base_model_prefix)
    out = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        use_cache=False,
    )
    return model.score(out.last_hidden_state).squeeze(-1)  # type: ignore[operator]


class PolicyValueHead(nn.Module):
    """value_model="head": a fresh linear value head on the policy's last hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.score(hidden_states).squeeze(-1)  # (B, T)


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first True in each row, or the row length when there is none: (B, T) -> (B,)."""
    T = bools.shape[-1]
    idx = torch.arange(T, device=bools.device).expand_as(bools)
    return torch.where(bools, idx, torch.full_like(idx, T)).min(dim=-1).values


def response_mask(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1.0 on response tokens up to and including the first EOS, 0.0 after: (B, R) -> (B, R)."""
    eos_at = first_true_indices(response == eos_token_id)  # (B,)
    idx = torch.arange(response.shape[1], device=response.device).unsqueeze(0)
    return (idx <= eos_at.unsqueeze(1)).float()


# ----------------------------------------------------------------------------- data helpers


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[PromptRow], config: PPOConfig) -> list[list[int]]:
    """Token ids of each rendered prompt, keeping the last max_prompt_length tokens."""
    out = []
    for row in prompts:
        text = render_prompt(tokenizer, row.content, use_chat_template=config.use_chat_template)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][-config.max_prompt_length :]
        out.append(ids)
    return out


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, P) ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def sft_examples(
    tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], config: PPOConfig
) -> list[tuple[list[int], int]]:
    """PPO-ptx rows {"prompt", "response"} -> (input_ids, prompt_length)."""
    out = []
    for i, row in enumerate(rows):
        if not row.get("response"):
            raise ValueError(f"sft_rows[{i}].response: must not be empty")
        prompt = render_prompt(tokenizer, row["prompt"], use_chat_template=config.use_chat_template)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(row["response"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt_ids = prompt_ids[-config.max_prompt_length :]
        out.append((prompt_ids + answer_ids[: config.response_length], len(prompt_ids)))
    return out


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a half checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states (restored on resume)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- the run


def run_ppo(
    config: PPOConfig,
    prompts: list[PromptRow],
    *,
    policy_path: str,
    ref_path: str,
    reward_path: str | None,
    output_dir: str | Path,
    sft_rows: list[dict[str, Any]] | None = None,
    on_progress: ProgressCallback | None = None,
    resume: bool = True,
    reward_fn: RewardFn | None = None,
) -> PPOResult:
    """Run PPO; save the policy to output_dir and return its path, metrics and sample rows.

    reward_fn replaces the reward model (tests, benchmarks); the value model then starts from
    the policy's weights. sft_rows ({"prompt", "response"}) feed PPO-ptx when ptx_coef > 0.
    """
    # ---- checks and setup
    config.validate()
    validate_prompts(prompts)
    if reward_path is None and reward_fn is None:
        raise ValueError("reward_path: required unless a reward_fn is given")
    if config.ptx_coef > 0 and not sft_rows:
        raise ValueError("sft_rows: required when ptx_coef > 0 (PPO-ptx)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    transformers.set_seed(config.seed)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    accelerator = Accelerator(cpu=device.type == "cpu", gradient_accumulation_steps=config.gradient_accumulation_steps)
    device = accelerator.device

    tokenizer = load_tokenizer(policy_path)
    policy: Any = AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype)
    check_tokenizer_matches(policy, tokenizer, field="policy_path")
    ref_policy = AutoModelForCausalLM.from_pretrained(ref_path, dtype=dtype).to(device)
    check_same_tokenizer(tokenizer, load_tokenizer(ref_path), field="ref_path")
    check_tokenizer_matches(ref_policy, tokenizer, field="ref_path")
    reward_model = None
    if reward_fn is None:
        assert reward_path is not None
        check_same_tokenizer(tokenizer, load_tokenizer(reward_path), field="reward_path")
        reward_model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=dtype).to(
            device
        )
        check_tokenizer_matches(reward_model, tokenizer, field="reward_path")
        reward_model.eval().requires_grad_(False)
    ref_policy.eval().requires_grad_(False)
    value_model: Any
    if config.value_model == "reward":
        # InstructGPT initialises the value function from the reward model.
        value_model = AutoModelForSequenceClassification.from_pretrained(
            reward_path or policy_path, num_labels=1, dtype=dtype
        )
    else:
        value_model = PolicyValueHead(policy.config.get_text_config().hidden_size).to(dtype)
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(
            policy,
            LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type="CAUSAL_LM"),
        )
    for model in (policy, value_model):
        disable_dropout(model)
        model.train()
    params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, eps=1e-5)
    policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)

    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    queries_all = encode_prompts(tokenizer, prompts, config)
    ptx_examples = sft_examples(tokenizer, sft_rows or [], config) if config.ptx_coef > 0 else []
    kl_ctl: AdaptiveKLController | FixedKLController = (
        AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        if config.adaptive_kl
        else FixedKLController(config.kl_coef)
    )
    num_steps = config.num_steps
    B, R = config.batch_size, config.response_length
    micro = config.mini_batch_size // config.gradient_accumulation_steps
    history: list[dict[str, Any]] = []
    start_step = 0

    # ---- resume
    ckpt_path = output_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        accelerator.unwrap_model(policy).load_state_dict(state["policy"])
        accelerator.unwrap_model(value_model).load_state_dict(state["value_model"])
        optimizer.load_state_dict(state["optimizer"])
        kl_ctl.value = state["kl_coef"]
        history = state["history"]
        start_step = state["step"]
        set_rng_state(state["rng"])
        logger.info("resumed PPO from step %d of %d", start_step, num_steps)

    # Prompt order: a fresh seeded permutation per pass over the prompts.
    def batch_prompt_indices(step: int) -> list[int]:
        order: list[int] = []
        epoch = 0
        while len(order) < (step + 1) * B:
            perm = list(range(len(queries_all)))
            random.Random(config.seed * 1000 + epoch).shuffle(perm)
            order += perm
            epoch += 1
        return order[step * B : (step + 1) * B]

    samples: list[dict[str, Any]] = []
    for step in range(start_step, num_steps):
        step_start = time.perf_counter()
        # ---- 1. rollout
        indices = batch_prompt_indices(step)
        query, query_mask = left_pad([queries_all[i] for i in indices], pad_id)
        query, query_mask = query.to(device), query_mask.to(device)  # (B, P)
        P = query.shape[1]
        unwrapped_policy = accelerator.unwrap_model(policy)
        policy.eval()
        with torch.no_grad():
            sequences = unwrapped_policy.generate(
                input_ids=query,
                attention_mask=query_mask,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=None,
                max_new_tokens=R,
                eos_token_id=eos_id,
                pad_token_id=pad_id,
            )  # (B, P + <=R)
        policy.train()
        response = sequences[:, P:]
        if response.shape[1] < R:  # every sequence ended early
            fill = torch.full((B, R - response.shape[1]), pad_id, device=device)
            response = torch.cat([response, fill], dim=1)  # (B, R)
        mask = response_mask(response, eos_id)  # (B, R)
        response = torch.where(mask.bool(), response, pad_id)
        finished = (response == eos_id).any(dim=1)  # (B,)
        last_idx = (mask.sum(1) - 1).long()  # (B,) index of the last real response token
        input_ids = torch.cat([query, response], dim=1)  # (B, P + R)
        attention_mask = torch.cat([query_mask, mask.long()], dim=1)  # (B, P + R)

        # ---- 2. score: logprobs, reference logprobs, values, reward-model score
        with torch.no_grad():
            out = forward_logits(policy, input_ids, attention_mask, hidden=config.value_model == "head")
            logits = out.logits[:, P - 1 : -1] / config.temperature  # (B, R, V)
            logprobs = logprobs_from_logits(logits, response)  # (B, R)
            ref_logits = forward_logits(ref_policy, input_ids, attention_mask).logits
            ref_logprobs = logprobs_from_logits(ref_logits[:, P - 1 : -1] / config.temperature, response)  # (B, R)
            if config.value_model == "head":
                values = value_model(out.hidden_states[-1][:, P - 1 : -1])  # (B, R)
            else:
                values = scalar_head_outputs(accelerator.unwrap_model(value_model), input_ids, attention_mask)[
                    :, P - 1 : -1
                ]  # (B, R)
            if reward_fn is not None:
                scores = reward_fn(response, mask).to(device).float()  # (B,)
            else:
                assert reward_model is not None
                head = scalar_head_outputs(reward_model, input_ids, attention_mask)  # (B, P + R)
                scores = head.gather(1, (P + last_idx).unsqueeze(1)).squeeze(1).float()  # (B,)
            raw_scores = scores.clone()
            if config.missing_eos_penalty:
                scores = scores - config.missing_eos_penalty * (~finished).float()
            del out, logits, ref_logits

            # ---- 3. rewards, GAE, whitening
            kl = kl_penalty(logprobs, ref_logprobs, config.kl_estimator) * mask  # (B, R)
            non_score_reward = -kl_ctl.value * kl  # (B, R)
            rewards = non_score_reward.clone()
            rewards[torch.arange(B, device=device), last_idx] += scores
            if config.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, values, mask, gamma=config.gamma, lam=config.lam)
            advantages = masked_whiten(advantages, mask)  # (B, R)

        # ---- 4. PPO epochs over minibatches, with gradient accumulation
        stats: dict[str, list[float]] = defaultdict(list)
        for _ in range(config.num_ppo_epochs):
            perm = torch.randperm(B, device=device)
            for mb_start in range(0, B, config.mini_batch_size):
                for mc_start in range(mb_start, mb_start + config.mini_batch_size, micro):
                    mb = perm[mc_start : mc_start + micro]
                    with accelerator.accumulate(policy, value_model):
                        out = forward_logits(
                            policy,
                            input_ids[mb],
                            attention_mask[mb],
                            hidden=config.value_model == "head",
                        )
                        new_logits = out.logits[:, P - 1 : -1] / config.temperature  # (b, R, V)
                        new_logprobs = logprobs_from_logits(new_logits, response[mb])  # (b, R)
                        if config.value_model == "head":
                            vpred = value_model(out.hidden_states[-1][:, P - 1 : -1])
                        else:
                            vpred = scalar_head_outputs(
                                accelerator.unwrap_model(value_model),
                                input_ids[mb],
                                attention_mask[mb],
                            )[:, P - 1 : -1]  # (b, R)
                        pg_loss, pg_stats = policy_loss(
                            new_logprobs,
                            logprobs[mb],
                            advantages[mb],
                            mask[mb],
                            cliprange=config.cliprange,
                        )
                        vf_loss, vf_stats = value_loss(
                            vpred,
                            values[mb],
                            returns[mb],
                            mask[mb],
                            cliprange_value=config.cliprange_value,
                        )
                        entropy = masked_mean(entropy_from_logits(new_logits), mask[mb])
                        loss = pg_loss + config.vf_coef * vf_loss - config.ent_coef * entropy
                        if config.ptx_coef > 0:
                            # PPO-ptx: keep the SFT language-model likelihood (InstructGPT eq. 2).
                            rows = random.sample(ptx_examples, min(config.ptx_batch_size, len(ptx_examples)))
                            lm = sft_batch(rows, pad_id)
                            ptx_loss = policy(**{k: v.to(device) for k, v in lm.items()}).loss
                            loss = loss + config.ptx_coef * ptx_loss
                            stats["ptx_loss"].append(ptx_loss.item())
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and config.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(params, config.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad()
                    stats["policy_loss"].append(pg_loss.item())
                    stats["value_loss"].append(vf_loss.item())
                    stats["entropy"].append(entropy.item())
                    stats["approx_kl"].append(pg_stats["approx_kl"].item())
                    stats["clipfrac"].append(pg_stats["clipfrac"].item())
                    stats["ratio"].append(pg_stats["ratio"].item())
                    stats["vf_clipfrac"].append(vf_stats["vf_clipfrac"].item())

        # ---- 5. KL controller, metrics, progress, checkpoint
        kl_per_seq = kl_penalty(logprobs, ref_logprobs, "k1").mul(mask).sum(1)  # (B,)
        mean_kl = kl_per_seq.mean().item()
        beta = kl_ctl.value
        kl_ctl.update(mean_kl, B)
        seconds = time.perf_counter() - step_start
        metrics: dict[str, Any] = {
            "ppo/reward": scores.mean().item(),
            "ppo/score": raw_scores.mean().item(),
            "ppo/kl": mean_kl,
            "ppo/rlhf_reward": (scores - beta * kl_per_seq).mean().item(),
            "ppo/non_score_reward": non_score_reward.sum(1).mean().item(),
            "ppo/kl_coef": beta,
            "ppo/response_length": mask.sum(1).mean().item(),
            "ppo/eos_fraction": finished.float().mean().item(),
            "ppo/episodes_per_s": B / seconds,
            "ppo/episode": (step + 1) * B,
        }
        metrics.update({f"ppo/{k}": float(np.mean(v)) for k, v in stats.items()})
        history.append(metrics)
        logger.info("ppo step %d/%d %s", step + 1, num_steps, metrics)
        samples = [
            {
                "prompt": prompts[indices[i]].content,
                "response": str(tokenizer.decode(response[i], skip_special_tokens=True)).replace("\x00", "").strip(),
                "reward": raw_scores[i].item(),
            }
            for i in range(min(config.num_sample_rows, B))
        ]
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < num_steps:
            save_checkpoint(
                ckpt_path,
                {
                    "step": step + 1,
                    "policy": accelerator.unwrap_model(policy).state_dict(),
                    "value_model": accelerator.unwrap_model(value_model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "kl_coef": kl_ctl.value,
                    "history": history,
                    "rng": rng_state(),
                    "config": config.to_dict(),
                },
            )
        if on_progress is not None:
            on_progress(step + 1, num_steps, metrics)

    # ---- save the final policy (LoRA merged so any loader can read it)
    final = accelerator.unwrap_model(policy)
    if hasattr(final, "merge_and_unload"):
        final = final.merge_and_unload()
    final.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    summary = dict(history[-1]) if history else {}
    summary["ppo/history"] = history
    (output_dir / "ppo_metrics.json").write_text(
        json.dumps({"config": config.to_dict(), "seed": config.seed, "history": history})
    )
    if ckpt_path.exists():
        ckpt_path.unlink()  # the run is complete: a rerun starts clean
    return PPOResult(model_path=str(output_dir), metrics=summary, samples=samples, seed=config.seed)
