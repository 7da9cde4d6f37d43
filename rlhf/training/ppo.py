"""PPO on a causal-LM policy against a reward model, with a per-token KL penalty to the SFT model.

Reads top to bottom like CleanRL's ppo.py: `ppo_setup` loads the models once, then each PPO step is
  1. `ppo_rollout`: the rollout engine samples a response to each prompt of this rank's batch,
     from exactly the distribution scored below (rollout.py);
  2. `ppo_score`: in micro-batches and without a graph: policy and reference log-probabilities
     (float32, at response positions only), values, and the reward model's score of the decoded
     text, read as in reward-model training (minus a penalty when the response never ended);
     rewards = -beta * KL per token, + score on the last token; GAE; whitened advantages;
  3. `ppo_update`: epochs over minibatches: clipped policy loss + vf_coef * clipped value loss
     (+ ptx_coef * LM loss on SFT rows: InstructGPT's PPO-ptx), gradient accumulation;
  4. adapt beta (optional), reduce metrics over ranks, report, checkpoint (main process).
Mixed precision keeps float32 master weights and optimizer state (accelerate autocast); the frozen
reference and reward models are held in the half precision. Under several processes (torchrun /
accelerate launch) each rank samples its own shard of the prompts with its own seed, policy and
critic are DDP-wrapped and every forward that is trained goes through the wrapper.
Shapes: B = rollout batch per rank, P = prompt tokens (left-padded), R = response tokens.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
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
    HALF_DTYPES,
    check_same_tokenizer,
    check_tokenizer_matches,
    enable_gradient_checkpointing,
    encode_text,
    eos_token_ids,
    left_pad,
    load_tokenizer,
    position_ids_from,
    render_prompt,
    resolve_device,
    resolve_dtype,
    reward_input_ids,
    reward_scores,
    right_pad,
    scalar_head_outputs,
    sft_batch,
    upcast_trainable,
    weights_dtype,
)
from rlhf.training.rollout import Rollout, RolloutEngine, SamplingSettings, build_engine, stop_mask
from rlhf.training.rows import PPOResult, ProgressCallback, PromptRow

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


def policy_forward(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, R: int, *, hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits at the R response positions only (the LM head is applied to those alone) and,
    when asked, the last hidden state there: (B, P + R) -> (B, R, V), (B, R, H)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from(attention_mask),
        logits_to_keep=R + 1,
        output_hidden_states=hidden,
        use_cache=False,
    )
    logits = out.logits[:, :-1]  # position t predicts token t + 1: positions P-1 .. P+R-2
    states = out.hidden_states[-1][:, -R - 1 : -1] if hidden else None
    return logits, states


class ValueModel(nn.Module):
    """value_model="reward": a sequence classifier (initialised from the reward model) whose scalar
    head at position t-1 is the value of the state before response token t (as trl does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, R: int) -> torch.Tensor:
        return scalar_head_outputs(self.model, input_ids, attention_mask)[:, -R - 1 : -1]  # (B, R)


class PolicyValueHead(nn.Module):
    """value_model="head": a fresh linear value head on the policy's last hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.score(hidden_states).squeeze(-1).float()  # (B, R)


def response_mask(response: torch.Tensor, eos_token_id: int | tuple[int, ...]) -> torch.Tensor:
    """1.0 on response tokens up to and including the first EOS, 0.0 after: (B, R) -> (B, R)."""
    stops = (eos_token_id,) if isinstance(eos_token_id, int) else eos_token_id
    return stop_mask(response, stops)


# ----------------------------------------------------------------------------- data helpers


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[PromptRow], config: PPOConfig) -> list[list[int]]:
    """Token ids of each rendered prompt, keeping the last max_prompt_length tokens."""
    out = []
    for row in prompts:
        text = render_prompt(tokenizer, row.content, use_chat_template=config.use_chat_template)
        out.append(encode_text(tokenizer, text, max_length=config.max_prompt_length))
    return out


def sft_examples(
    tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]], config: PPOConfig
) -> list[tuple[list[int], int]]:
    """PPO-ptx rows {"prompt", "response"} -> (input_ids, prompt_length)."""
    out = []
    for i, row in enumerate(rows):
        if not row.get("response"):
            raise ValueError(f"sft_rows[{i}].response: must not be empty")
        prompt = render_prompt(tokenizer, row["prompt"], use_chat_template=config.use_chat_template)
        prompt_ids = encode_text(tokenizer, prompt, max_length=config.max_prompt_length)
        answer_ids = tokenizer(row["response"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
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


@dataclass
class PPOProgress:
    """What a checkpoint holds besides the models' state: the steps done, the metrics of each, and
    which prompts each rank has seen."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    prompt_ids_by_rank: dict[str, list[str]] = field(default_factory=dict)


def ppo_checkpoint(setup: PPOSetup, path: Path, progress: PPOProgress) -> None:
    """Save a run to resume from (every rank calls it: the RNG states are gathered): models, optimizer,
    KL coefficient, counters, each rank's RNG, and ``progress``; written by the main process."""
    accelerator = setup.accelerator
    rng = gather_object([rng_state()])
    if accelerator.is_main_process:
        save_checkpoint(
            path,
            {
                "step": progress.step,
                "policy": accelerator.unwrap_model(setup.policy).state_dict(),
                "value_model": accelerator.unwrap_model(setup.value_model).state_dict(),
                "optimizer": setup.optimizer.state_dict(),
                "kl_coef": setup.kl_ctl.value,
                "history": progress.history,
                "counters": setup.counters,
                "prompt_ids_by_rank": progress.prompt_ids_by_rank,
                "rng": rng,
                "config": setup.config.to_dict(),
            },
        )
    accelerator.wait_for_everyone()


def ppo_resume(setup: PPOSetup, path: Path) -> PPOProgress:
    """Restore what ``ppo_checkpoint`` saved at ``path`` into ``setup`` (and this rank's RNG) and return
    its progress; a fresh start when there is no checkpoint."""
    if not path.exists():
        return PPOProgress()
    accelerator = setup.accelerator
    state = torch.load(path, map_location=accelerator.device, weights_only=False)
    accelerator.unwrap_model(setup.policy).load_state_dict(state["policy"])
    accelerator.unwrap_model(setup.value_model).load_state_dict(state["value_model"])
    setup.optimizer.load_state_dict(state["optimizer"])
    setup.kl_ctl.value = state["kl_coef"]
    setup.counters.update(state.get("counters", {}))
    rng = state["rng"]
    set_rng_state(rng[accelerator.process_index] if isinstance(rng, list) else rng)
    logger.info("resumed PPO from step %d of %d", state["step"], setup.config.num_steps)
    return PPOProgress(state["step"], state["history"], state.get("prompt_ids_by_rank", {}))


# ----------------------------------------------------------------------------- setup


@dataclass
class PPOSetup:
    """Everything a run holds: models (policy and critic prepared by accelerate), optimizer,
    tokenizers, the rollout engine, the KL controller."""

    config: PPOConfig
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    policy: Any
    value_model: Any
    ref_policy: Any | None  # None: the reference is the policy with its LoRA adapter disabled
    reward_model: Any | None
    reward_tokenizer: PreTrainedTokenizerBase | None
    reward_fn: RewardFn | None
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    engine: RolloutEngine
    kl_ctl: AdaptiveKLController | FixedKLController
    stop_token_ids: tuple[int, ...]
    counters: dict[str, int] = field(default_factory=lambda: {"rollouts": 0, "optimizer_steps": 0, "generate_calls": 0})

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def _frozen(model: Any, device: torch.device) -> Any:
    model = model.to(device)
    model.eval().requires_grad_(False)
    return model


def ppo_setup(
    config: PPOConfig,
    *,
    policy_path: str,
    ref_path: str,
    reward_path: str | None,
    reward_fn: RewardFn | None = None,
) -> PPOSetup:
    """Load and place the models, wrap them for mixed precision / several processes, build the engine."""
    device = resolve_device(config.device)
    lora = config.lora_r > 0
    # Trained weights stay float32 under mixed precision (a LoRA base, frozen, is held in the half
    # type); frozen models are held in the half type.
    train_dtype = weights_dtype(config.mixed_precision, config.dtype, device, lora=lora)
    frozen_dtype = HALF_DTYPES.get(config.mixed_precision) or resolve_dtype(config.dtype, device)
    # accelerate keeps one process-wide state; a worker that ran another precision before resets it.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    device = accelerator.device

    tokenizer = load_tokenizer(policy_path)
    policy: Any = AutoModelForCausalLM.from_pretrained(policy_path, dtype=train_dtype)
    check_tokenizer_matches(policy, tokenizer, field="policy_path")
    check_same_tokenizer(tokenizer, load_tokenizer(ref_path), field="ref_path")
    # With LoRA on a policy that is the reference, the reference is the base model under the adapter.
    share_reference = lora and Path(ref_path).resolve() == Path(policy_path).resolve()
    ref_policy = None
    if not share_reference:
        ref_policy = _frozen(AutoModelForCausalLM.from_pretrained(ref_path, dtype=frozen_dtype), device)
        check_tokenizer_matches(ref_policy, tokenizer, field="ref_path")
    reward_model = reward_tokenizer = None
    if reward_fn is None:
        if reward_path is None:
            raise ValueError("reward_path: required unless a reward_fn is given")
        reward_tokenizer = load_tokenizer(reward_path, require_eos=False)
        reward_model = AutoModelForSequenceClassification.from_pretrained(reward_path, num_labels=1, dtype=frozen_dtype)
        reward_model.config.pad_token_id = reward_tokenizer.pad_token_id
        check_tokenizer_matches(reward_model, reward_tokenizer, field="reward_path")
        reward_model = _frozen(reward_model, device)

    value_model: Any
    if config.value_model == "reward":
        # InstructGPT initialises the value function from the reward model.
        critic: Any = AutoModelForSequenceClassification.from_pretrained(
            reward_path or policy_path, num_labels=1, dtype=train_dtype
        )
        critic.config.pad_token_id = tokenizer.pad_token_id
        if reward_path is not None:
            check_same_tokenizer(tokenizer, load_tokenizer(reward_path, require_eos=False), field="reward_path")
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(critic)
        if lora:
            critic = _lora(critic, config, "SEQ_CLS")
        value_model = ValueModel(critic)
    else:
        value_model = PolicyValueHead(policy.config.get_text_config().hidden_size)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    if lora:
        policy = _lora(policy, config, "CAUSAL_LM")
    for model in (policy, value_model):
        disable_dropout(model)
        model.train()
    params = [p for m in (policy, value_model) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, eps=1e-5)
    policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)
    stops = tuple(eos_token_ids(accelerator.unwrap_model(policy), tokenizer))
    settings = SamplingSettings(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.response_length,
        stop_token_ids=stops,
        pad_token_id=int(tokenizer.pad_token_id),
    )
    engine = build_engine(
        config.rollout_engine,
        settings,
        batch_size=config.rollout_batch_size,
        static_cache=config.static_cache,
        model_path=policy_path,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        seed=config.seed + accelerator.process_index,
    )
    kl_ctl: AdaptiveKLController | FixedKLController = (
        AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        if config.adaptive_kl
        else FixedKLController(config.kl_coef)
    )
    return PPOSetup(
        config=config,
        accelerator=accelerator,
        tokenizer=tokenizer,
        policy=policy,
        value_model=value_model,
        ref_policy=ref_policy,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_fn=reward_fn,
        optimizer=optimizer,
        params=params,
        engine=engine,
        kl_ctl=kl_ctl,
        stop_token_ids=stops,
    )


def _lora(model: Any, config: PPOConfig, task_type: str) -> Any:
    from peft import LoraConfig, get_peft_model

    return upcast_trainable(
        get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, task_type=task_type))
    )


# ----------------------------------------------------------------------------- one PPO step


@dataclass
class Batch:
    """One rollout batch on this rank, with everything the update needs."""

    prompts: list[PromptRow]
    query: torch.Tensor  # (B, P)
    query_mask: torch.Tensor  # (B, P)
    rollout: Rollout
    input_ids: torch.Tensor  # (B, P + R)
    attention_mask: torch.Tensor  # (B, P + R)
    logprobs: torch.Tensor | None = None  # (B, R) float32, recomputed by the trained policy
    ref_logprobs: torch.Tensor | None = None  # (B, R)
    values: torch.Tensor | None = None  # (B, R)
    raw_scores: torch.Tensor | None = None  # (B,) reward model (normalised), before the EOS penalty
    scores: torch.Tensor | None = None  # (B,)
    non_score_reward: torch.Tensor | None = None  # (B, R)
    advantages: torch.Tensor | None = None  # (B, R)
    returns: torch.Tensor | None = None  # (B, R)


def ppo_rollout(setup: PPOSetup, prompts: list[PromptRow], queries: list[list[int]]) -> Batch:
    """Sample one response per prompt with the configured engine."""
    query, query_mask = left_pad(queries, int(setup.tokenizer.pad_token_id))
    query, query_mask = query.to(setup.device), query_mask.to(setup.device)  # (B, P)
    policy = setup.accelerator.unwrap_model(setup.policy)
    policy.eval()
    start = time.perf_counter()
    with setup.accelerator.autocast():
        rollout = setup.engine.sample(policy, query, query_mask)
    rollout.seconds = time.perf_counter() - start
    policy.train()
    setup.counters["rollouts"] += len(prompts)
    setup.counters["generate_calls"] += rollout.generate_calls
    return Batch(
        prompts=prompts,
        query=query,
        query_mask=query_mask,
        rollout=rollout,
        input_ids=torch.cat([query, rollout.response], dim=1),
        attention_mask=torch.cat([query_mask, rollout.mask.long()], dim=1),
    )


@torch.no_grad()
def reward_model_scores(setup: PPOSetup, batch: Batch) -> torch.Tensor:
    """The reward model's score of each response, read exactly as in reward-model training: the
    decoded response in its conversation, tokenized by the reward model's tokenizer."""
    assert setup.reward_model is not None and setup.reward_tokenizer is not None
    config = setup.config
    texts = setup.tokenizer.batch_decode(batch.rollout.response, skip_special_tokens=True)
    max_length = max(512, config.max_prompt_length + config.response_length + 8)
    sequences = [
        reward_input_ids(
            setup.reward_tokenizer,
            row.content,
            text,
            max_length=max_length,
            use_chat_template=config.use_chat_template,
            finished=bool(done),
        )
        for row, text, done in zip(batch.prompts, texts, batch.rollout.finished.tolist(), strict=True)
    ]
    scores = []
    for start in range(0, len(sequences), config.forward_batch_size):
        ids, mask = right_pad(sequences[start : start + config.forward_batch_size], setup.reward_tokenizer.pad_token_id)
        scores.append(reward_scores(setup.reward_model, ids.to(setup.device), mask.to(setup.device)))
    return torch.cat(scores)


@torch.no_grad()
def ppo_score(setup: PPOSetup, batch: Batch) -> Batch:
    """Log-probabilities, reference log-probabilities, values and scores, in micro-batches; then
    the per-token rewards, GAE and whitened advantages."""
    config, accelerator = setup.config, setup.accelerator
    R = config.response_length
    response, mask = batch.rollout.response, batch.rollout.mask
    policy = accelerator.unwrap_model(setup.policy)
    value_model = accelerator.unwrap_model(setup.value_model)
    head = config.value_model == "head"
    logprobs, ref_logprobs, values = [], [], []
    for start in range(0, response.shape[0], config.forward_batch_size):
        part = slice(start, start + config.forward_batch_size)
        ids, att = batch.input_ids[part], batch.attention_mask[part]
        with accelerator.autocast():
            logits, states = policy_forward(policy, ids, att, R, hidden=head)
            logprobs.append(logprobs_from_logits(logits / config.temperature, response[part]))
            del logits
            if setup.ref_policy is None:
                with policy.disable_adapter():
                    ref_logits, _ = policy_forward(policy, ids, att, R)
            else:
                ref_logits, _ = policy_forward(setup.ref_policy, ids, att, R)
            ref_logprobs.append(logprobs_from_logits(ref_logits / config.temperature, response[part]))
            del ref_logits
            values.append(value_model(states) if head else value_model(ids, att, R))
    batch.logprobs = torch.cat(logprobs) * mask  # (B, R)
    batch.ref_logprobs = torch.cat(ref_logprobs) * mask
    batch.values = torch.cat(values).float()
    if setup.reward_fn is not None:
        batch.raw_scores = setup.reward_fn(response, mask).to(setup.device).float()  # (B,)
    else:
        batch.raw_scores = reward_model_scores(setup, batch)
    scores = batch.raw_scores.clone()
    if config.missing_eos_penalty:
        scores = scores - config.missing_eos_penalty * (~batch.rollout.finished).float()
    batch.scores = scores

    B = response.shape[0]
    last_idx = (mask.sum(1) - 1).long()  # (B,) index of the last real response token
    kl = kl_penalty(batch.logprobs, batch.ref_logprobs, config.kl_estimator) * mask  # (B, R)
    batch.non_score_reward = -setup.kl_ctl.value * kl
    rewards = batch.non_score_reward.clone()
    rewards[torch.arange(B, device=setup.device), last_idx] += scores
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, batch.returns = gae(rewards, batch.values, mask, gamma=config.gamma, lam=config.lam)
    batch.advantages = masked_whiten(advantages, mask)  # (B, R)
    return batch


def ppo_update(setup: PPOSetup, batch: Batch, ptx_examples: list[tuple[list[int], int]]) -> dict[str, list[float]]:
    """Epochs over minibatches with gradient accumulation; returns per-micro-batch statistics
    (the first entry is the first minibatch: ratio 1 and approx_kl 0 when sampling is exact)."""
    config, accelerator = setup.config, setup.accelerator
    assert batch.logprobs is not None and batch.values is not None and batch.advantages is not None
    assert batch.returns is not None
    R, B = config.response_length, batch.rollout.response.shape[0]
    response, mask = batch.rollout.response, batch.rollout.mask
    micro = config.mini_batch_size // config.gradient_accumulation_steps
    head = config.value_model == "head"
    pad_id = int(setup.tokenizer.pad_token_id)
    stats: dict[str, list[float]] = defaultdict(list)
    for _ in range(config.num_ppo_epochs):
        perm = torch.randperm(B, device=setup.device)
        for mb_start in range(0, B, config.mini_batch_size):
            for mc_start in range(mb_start, mb_start + config.mini_batch_size, micro):
                mb = perm[mc_start : mc_start + micro]
                with accelerator.accumulate(setup.policy, setup.value_model):
                    logits, states = policy_forward(
                        setup.policy, batch.input_ids[mb], batch.attention_mask[mb], R, hidden=head
                    )
                    logits = logits / config.temperature  # (b, R, V)
                    new_logprobs = logprobs_from_logits(logits, response[mb])  # (b, R) float32
                    if head:
                        vpred = setup.value_model(states)
                    else:
                        vpred = setup.value_model(batch.input_ids[mb], batch.attention_mask[mb], R)  # (b, R)
                    pg_loss, pg_stats = policy_loss(
                        new_logprobs, batch.logprobs[mb], batch.advantages[mb], mask[mb], cliprange=config.cliprange
                    )
                    vf_loss, vf_stats = value_loss(
                        vpred.float(),
                        batch.values[mb],
                        batch.returns[mb],
                        mask[mb],
                        cliprange_value=config.cliprange_value,
                    )
                    loss = pg_loss + config.vf_coef * vf_loss
                    if config.ent_coef:
                        entropy = masked_mean(entropy_from_logits(logits), mask[mb])
                        loss = loss - config.ent_coef * entropy
                    else:
                        with torch.no_grad():  # a statistic only: no graph through the softmax
                            entropy = masked_mean(entropy_from_logits(logits.detach()), mask[mb])
                    del logits
                    if config.ptx_coef > 0:
                        # PPO-ptx: keep the SFT language-model likelihood (InstructGPT eq. 2).
                        rows = random.sample(ptx_examples, min(config.ptx_batch_size, len(ptx_examples)))
                        lm = sft_batch(rows, pad_id)
                        ptx_loss = setup.policy(**{k: v.to(setup.device) for k, v in lm.items()}).loss
                        loss = loss + config.ptx_coef * ptx_loss
                        stats["ptx_loss"].append(ptx_loss.item())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if config.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(setup.params, config.max_grad_norm)
                        setup.counters["optimizer_steps"] += 1
                    setup.optimizer.step()
                    setup.optimizer.zero_grad()
                stats["policy_loss"].append(pg_loss.item())
                stats["value_loss"].append(vf_loss.item())
                stats["entropy"].append(entropy.item())
                stats["approx_kl"].append(pg_stats["approx_kl"].item())
                stats["clipfrac"].append(pg_stats["clipfrac"].item())
                stats["ratio"].append(pg_stats["ratio"].item())
                stats["vf_clipfrac"].append(vf_stats["vf_clipfrac"].item())
    setup.engine.sync_weights(accelerator.unwrap_model(setup.policy))
    return stats


# ----------------------------------------------------------------------------- the run


def _reduce_mean(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over the ranks (same keys on every rank)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    reduced = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, reduced.tolist(), strict=True))


def _checksum(model: Any) -> float:
    """Sum of the trainable parameters: equal on every rank when gradients are synchronised."""
    return float(sum(p.detach().double().sum().item() for p in model.parameters() if p.requires_grad))


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
    Under several processes, batch_size is per rank and each rank samples its own prompts.
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
    transformers.set_seed(config.seed)  # the same initial weights (value head, LoRA) on every rank
    setup = ppo_setup(config, policy_path=policy_path, ref_path=ref_path, reward_path=reward_path, reward_fn=reward_fn)
    accelerator = setup.accelerator
    rank, world = accelerator.process_index, accelerator.num_processes
    transformers.set_seed(config.seed + rank)  # each rank samples differently
    # Disjoint prompt shards: rank r takes every world-th prompt from r.
    shard = list(range(rank, len(prompts), world)) or [rank % len(prompts)]
    queries_all = encode_prompts(setup.tokenizer, prompts, config)
    ptx_examples = sft_examples(setup.tokenizer, sft_rows or [], config) if config.ptx_coef > 0 else []
    num_steps = config.num_steps
    B = config.batch_size
    ckpt_path = output_dir / CHECKPOINT
    progress = ppo_resume(setup, ckpt_path) if resume else PPOProgress()
    start_step, history, prompt_ids_by_rank = progress.step, progress.history, progress.prompt_ids_by_rank

    # Prompt order: a fresh seeded permutation of this rank's shard per pass over it.
    def batch_prompt_indices(step: int) -> list[int]:
        order: list[int] = []
        epoch = 0
        while len(order) < (step + 1) * B:
            perm = list(shard)
            random.Random(config.seed * 1000 + epoch).shuffle(perm)
            order += perm
            epoch += 1
        return order[step * B : (step + 1) * B]

    samples: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    for step in range(start_step, num_steps):
        step_start = time.perf_counter()
        indices = batch_prompt_indices(step)
        batch = ppo_rollout(setup, [prompts[i] for i in indices], [queries_all[i] for i in indices])
        batch = ppo_score(setup, batch)
        stats = ppo_update(setup, batch, ptx_examples)
        assert batch.logprobs is not None and batch.ref_logprobs is not None
        assert batch.scores is not None and batch.raw_scores is not None and batch.non_score_reward is not None

        # ---- KL controller, metrics, progress, checkpoint
        mask, rollout = batch.rollout.mask, batch.rollout
        kl_per_seq = kl_penalty(batch.logprobs, batch.ref_logprobs, "k1").mul(mask).sum(1)  # (B,)
        beta = setup.kl_ctl.value
        local = {
            "ppo/reward": batch.scores.mean().item(),
            "ppo/score": batch.raw_scores.mean().item(),
            "ppo/kl": kl_per_seq.mean().item(),
            "ppo/rlhf_reward": (batch.scores - beta * kl_per_seq).mean().item(),
            "ppo/non_score_reward": batch.non_score_reward.sum(1).mean().item(),
            "ppo/response_length": mask.sum(1).mean().item(),
            "ppo/eos_fraction": rollout.finished.float().mean().item(),
            # How far the sampler's log-probabilities are from the trained policy's (0 when exact).
            "ppo/sampling_logprob_gap": masked_mean((rollout.logprobs - batch.logprobs).abs(), mask).item(),
            **{f"ppo/{k}": float(np.mean(v)) for k, v in stats.items()},
        }
        reduced = _reduce_mean(accelerator, local)
        setup.kl_ctl.update(reduced["ppo/kl"], B * world)
        seconds = time.perf_counter() - step_start
        metrics = {
            **reduced,
            "ppo/kl_coef": beta,
            "ppo/episodes_per_s": B * world / seconds,
            "ppo/rollout_tokens_per_s": rollout.tokens / max(rollout.seconds, 1e-9),
            "ppo/rollout_seconds": rollout.seconds,
            "ppo/episode": (step + 1) * B * world,
            "ppo/rollouts": setup.counters["rollouts"] * world,
            "ppo/optimizer_steps": setup.counters["optimizer_steps"],
            "ppo/generate_calls": setup.counters["generate_calls"] * world,
        }
        history.append(metrics)
        for r, ids in gather_object([(rank, [p.id for p in batch.prompts])]):
            prompt_ids_by_rank.setdefault(str(r), []).extend(ids)
        if accelerator.is_main_process:
            logger.info("ppo step %d/%d %s", step + 1, num_steps, metrics)
        texts = setup.tokenizer.batch_decode(rollout.response, skip_special_tokens=True)
        samples = [
            {
                "prompt": batch.prompts[i].content,
                "response": str(texts[i]).replace("\x00", "").strip(),
                "reward": batch.raw_scores[i].item(),
            }
            for i in range(min(config.num_sample_rows, len(texts)))
        ]
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < num_steps:
            ppo_checkpoint(setup, ckpt_path, PPOProgress(step + 1, history, prompt_ids_by_rank))
        if on_progress is not None and accelerator.is_main_process:
            on_progress(step + 1, num_steps, metrics)

    # ---- save the final policy (LoRA merged so any loader can read it), on the main process
    final = accelerator.unwrap_model(setup.policy)
    checksum = _checksum(final)
    if accelerator.is_main_process:
        if hasattr(final, "merge_and_unload"):
            final = final.merge_and_unload()
        final.save_pretrained(output_dir)
        setup.tokenizer.save_pretrained(output_dir)
        (output_dir / "ppo_metrics.json").write_text(
            json.dumps(
                {
                    "config": config.to_dict(),
                    "seed": config.seed,
                    "world_size": world,
                    "history": history,
                    "prompt_ids_by_rank": prompt_ids_by_rank,
                }
            )
        )
        if ckpt_path.exists():
            ckpt_path.unlink()  # the run is complete: a rerun starts clean
    accelerator.wait_for_everyone()
    summary = dict(history[-1]) if history else {}
    summary["ppo/policy_checksum"] = checksum
    summary["ppo/history"] = history
    return PPOResult(model_path=str(output_dir), metrics=summary, samples=samples, seed=config.seed)
