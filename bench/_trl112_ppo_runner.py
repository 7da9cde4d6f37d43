"""Run trl 1.12's PPOTrainer on the benchmark's tiny setup; print one JSON line.

Runs inside the separate virtualenv that bench/ppo_vs_trl.py makes (trl==1.12.0, the last
release with PPOTrainer). Not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, help="JSON file written by ppo_vs_trl.py")
    args = parser.parse_args()
    with open(args.spec, encoding="utf-8") as fh:
        spec = json.load(fh)
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["policy"], padding_side="left")
    prompts = spec["prompt_texts"]
    n = spec["total_episodes"]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]})
    config = PPOConfig(
        output_dir=spec["output_dir"],
        # trl 1.12's rollout batch is per_device_train_batch_size * gradient_accumulation_steps, split
        # into num_mini_batches, with an optimizer step per micro-batch: a per-device batch of the whole
        # rollout gives our rollouts per step and one optimizer step per minibatch.
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        num_mini_batches=spec["batch_size"] // spec["mini_batch_size"],
        local_rollout_forward_batch_size=spec["batch_size"],
        total_episodes=n,
        num_ppo_epochs=spec["num_ppo_epochs"],
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        learning_rate=spec["learning_rate"],
        kl_coef=spec["kl_coef"],
        missing_eos_penalty=spec["missing_eos_penalty"],
        stop_token="eos",
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=spec["device"] == "cpu",
        seed=spec["seed"],
        lr_scheduler_type="constant",
    )
    dtype = torch.float32
    policy = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=dtype)
    ref = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=dtype)
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=dataset,
    )
    # Count the work trl does: optimizer steps, generate calls and sequences sampled.
    work = {"optimizer_steps": 0, "generate_calls": 0, "rollouts": 0}
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # under accelerate's wrapper
    inner.register_step_post_hook(lambda *_: work.__setitem__("optimizer_steps", work["optimizer_steps"] + 1))
    generate = policy.generate

    def counted_generate(*args, **kwargs):
        out = generate(*args, **kwargs)
        work["generate_calls"] += 1
        work["rollouts"] += out.sequences.shape[0] if hasattr(out, "sequences") else out.shape[0]
        return out

    policy.generate = counted_generate

    class StepClock(TrainerCallback):
        """Time from the start of training to the end of the last PPO step (the loop alone)."""

        begin = end = 0.0

        def on_train_begin(self, *args, **kwargs):
            StepClock.begin = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            StepClock.end = time.perf_counter()

    trainer.add_callback(StepClock())
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    by_episode = {h["episode"]: h for h in trainer.state.log_history if "objective/scores" in h}
    logs = [by_episode[e] for e in sorted(by_episode)]  # one entry per PPO step
    print(
        json.dumps(
            {
                "trl": trl.__version__,
                "seconds": seconds,
                "loop_seconds": StepClock.end - StepClock.begin,
                "episodes": logs[-1]["episode"] if logs else n,
                "reward": [h["objective/scores"] for h in logs],
                "kl": [h["objective/kl"] for h in logs],
                "ppo_steps": len(logs),
                **work,
            }
        )
    )


if __name__ == "__main__":
    main()
