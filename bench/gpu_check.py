"""The training path on one GPU with a ~1B model: PPO with both HF rollout engines, one RM epoch.

Builds a Llama-3.2-1B-shaped model from config (random weights, no download), then
- 2 PPO steps with rollout_engine=hf (transformers generate) and 2 with hf_fast (the KV-cache loop
  that drops finished rows), same settings and seed: bf16 mixed precision, a value head on the
  policy, the same model as reference and reward model;
- one reward-model epoch on synthetic K=4 rankings (needs trl and datasets; skipped with a
  message where they do not import);
and prints per run: rollout tokens/s, seconds per PPO step, peak GPU memory and MFU (model FLOPs,
2 x parameters per token forward and 6 x per token trained, attention's quadratic term left out,
over the GPU's dense bf16 peak). Run through bench/gpu_check.sh.

  python bench/gpu_check.py [--size 1b|100m|tiny] [--device cuda|cpu] [--batch 64] [--response-length 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Dense bf16 peak of the GPUs this is run on (datasheets), for MFU.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def memory_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1024**3 if device == "cuda" else float("nan")  # printed as nan on CPU


def mfu(flops: float, seconds: float, device: str) -> str:
    peak = peak_tflops(device)
    achieved = flops / seconds / 1e12
    return f"{achieved:.1f} TFLOP/s" + (f", MFU {achieved / peak:.1%} of {peak:g}" if peak else "")


def run_ppo_engine(engine: str, model: str, n_params: int, args: argparse.Namespace) -> None:
    from rlhf.training.config import PPOConfig
    from rlhf.training.ppo import run_ppo
    from rlhf.training.rows import PromptRow
    from rlhf.training.tiny import load_corpus

    corpus = load_corpus()
    prompts = [PromptRow(id=str(i), text=corpus[i % len(corpus)]["instruction"]) for i in range(args.batch * 2)]
    config = PPOConfig(
        total_episodes=args.batch * 2,
        batch_size=args.batch,
        mini_batch_size=args.batch // 4,
        num_ppo_epochs=1,
        response_length=args.response_length,
        temperature=1.0,
        learning_rate=1e-6,
        value_model="head",
        mixed_precision="bf16" if args.device == "cuda" else "no",
        rollout_engine=engine,
        forward_batch_size=args.batch // 2,
        missing_eos_penalty=0.0,
        device=args.device,
        seed=0,
    )
    history: list[dict] = []
    memory_reset(args.device)
    start = time.perf_counter()
    run_ppo(
        config,
        prompts,
        policy_path=model,
        ref_path=model,
        reward_path=model,
        output_dir=Path(tempfile.mkdtemp(prefix=f"ppo-{engine}-")),
        on_progress=lambda s, t, m: history.append(m),
    )
    total = time.perf_counter() - start
    for i, m in enumerate(history):
        step_s = config.batch_size / m["ppo/episodes_per_s"]
        tokens = m["ppo/response_length"] * config.batch_size
        seq = tokens + config.batch_size * 16  # prompts are ~16 tokens
        # rollout forward + policy/reference/reward scoring forwards + one epoch of forward and backward
        flops = 2 * n_params * tokens + 3 * 2 * n_params * seq + 6 * n_params * seq
        print(
            f"  {engine:>7} step {i + 1}: rollout {m['ppo/rollout_tokens_per_s']:8.0f} tokens/s "
            f"({m['ppo/rollout_seconds']:.2f} s of {step_s:.2f} s), mean response {m['ppo/response_length']:.0f} "
            f"tokens, {mfu(flops, step_s, args.device)}"
        )
    print(f"  {engine:>7}: peak GPU memory {memory_peak_gib(args.device):.1f} GiB; {total:.1f} s with loading")


def run_reward_epoch(model: str, n_params: int, args: argparse.Namespace) -> None:
    try:
        from rlhf.training.reward import train_reward_model
    except ImportError as exc:
        print(f"  RM epoch skipped: {exc} (carry trl and datasets wheels, see bench/gpu_check.sh)")
        return
    from bench.memory import _rankings
    from rlhf.training.config import ModelConfig, RewardModelConfig

    rows = _rankings(args.rankings, 4)
    config = RewardModelConfig(
        model=ModelConfig(
            model_name_or_path=model, device=args.device, mixed_precision="bf16" if args.device == "cuda" else "no"
        ),
        max_pairs_per_batch=24,
        max_length=256,
        normalize_rewards=False,
    )
    memory_reset(args.device)
    start = time.perf_counter()
    result = train_reward_model(config, rows, output_dir=Path(tempfile.mkdtemp(prefix="rm-")))
    seconds = time.perf_counter() - start
    forwards = int(result.metrics.get("reward/forwards", 4 * args.rankings))
    flops = 6 * n_params * forwards * 64  # responses here are ~64 tokens with their prompt
    print(
        f"  RM epoch: {len(rows)} pairs from {args.rankings} rankings of K=4 ({forwards} sequences forwarded) in "
        f"{seconds:.1f} s with loading and saving: {len(rows) / seconds:.1f} pairs/s; peak GPU memory "
        f"{memory_peak_gib(args.device):.1f} GiB; {mfu(flops, seconds, args.device)} (a lower bound)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1b", choices=["tiny", "100m", "1b"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--rankings", type=int, default=96)
    args = parser.parse_args()
    import torch
    import transformers

    from bench._models import build_llama

    transformers.logging.set_verbosity_error()  # the reward model's fresh head is expected
    started = time.perf_counter()
    where = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {where}")
    model = Path(tempfile.mkdtemp(prefix="gpu-check-")) / "model"
    n_params = build_llama(model, args.size, dtype="bfloat16")
    built = time.perf_counter() - started
    print(f"model: Llama-style {args.size} from config, {n_params / 1e9:.2f}B parameters ({built:.0f} s to build)")
    print(
        f"PPO: batch {args.batch}, response_length {args.response_length}, bf16 mixed, value head, 2 steps per engine"
    )
    for engine in ("hf", "hf_fast"):
        run_ppo_engine(engine, str(model), n_params, args)
    run_reward_epoch(str(model), n_params, args)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
