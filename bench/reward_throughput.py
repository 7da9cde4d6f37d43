"""Reward-model training pairs/s: our train_reward_model vs trl's RewardTrainer called directly.

Same model (the tiny SFT policy with a fresh scalar head), same comparisons, same batch size
(rankings of K=4 -> 6 pairs; 4 rankings = 24 pairs per batch on our side, 24 pairs per batch on
trl's), same optimizer settings, in the same process; runs alternate and the medians are
compared. Target: ratio >= 0.95.

  python bench/reward_throughput.py [--device cpu|cuda] [--gpt2-size tiny|small] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {
    "tiny": {"n_embd": 64, "n_layer": 2, "n_head": 2},
    "small": {"n_embd": 768, "n_layer": 12, "n_head": 12},  # GPT-2 small's shape, random init
}
WORDS = ["river", "garden", "music", "window", "planet", "pencil", "cloud", "bridge"]


def comparisons(n_groups: int, k: int, seed: int = 0) -> list:
    """Rankings where more 'good' words rank higher: C(k, 2) pairs per ranking."""
    from rlhf.training.rows import ComparisonRow

    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        prompt = f"Say something about the {rng.choice(WORDS)}."
        counts = rng.sample(range(k + 2), k)
        responses = []
        for n in counts:
            words = [rng.choice(WORDS) for _ in range(4)] + ["good"] * n
            rng.shuffle(words)
            responses.append((n, " ".join(words)))
        for (a, ta), (b, tb) in itertools.combinations(responses, 2):
            chosen, rejected = (ta, tb) if a > b else (tb, ta)
            rows.append(ComparisonRow(prompt=prompt, chosen=chosen, rejected=rejected, group_id=str(g)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpt2-size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--groups", type=int, default=160, help="rankings of K=4 (6 pairs each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardTrainer

    from rlhf.training.config import ModelConfig, RewardModelConfig
    from rlhf.training.models import load_tokenizer, render_prompt, resolve_device
    from rlhf.training.reward import train_reward_model, trl_reward_args
    from rlhf.training.tiny import build_tiny_policy

    transformers.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="rm-bench-"))
    policy = build_tiny_policy(work / "policy", **SIZES[args.gpt2_size])
    k, pairs_per_batch = 4, 24
    rows = comparisons(args.groups, k)
    config = RewardModelConfig(
        model=ModelConfig(model_name_or_path=policy, device=args.device),
        learning_rate=1e-4,
        num_epochs=1.0,
        max_pairs_per_batch=pairs_per_batch,
        logging_steps=10,
    )
    tokenizer = load_tokenizer(policy)
    # trl direct: its own preprocessing of (prompt, chosen, rejected) text; it appends EOS.
    dataset = Dataset.from_dict(
        {
            "prompt": [render_prompt(tokenizer, r.prompt, use_chat_template=True) for r in rows],
            "chosen": [r.chosen for r in rows],
            "rejected": [r.rejected for r in rows],
        }
    )
    device = resolve_device(args.device)

    def run_ours(i: int) -> float:
        result = train_reward_model(config, rows, output_dir=work / f"ours{i}")
        return float(result.metrics["reward/train_pairs_per_s"])

    def run_trl(i: int) -> float:
        transformers.set_seed(config.seed)
        model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1).to(device)
        model.config.pad_token_id = tokenizer.pad_token_id
        targs = trl_reward_args(config, work / f"trl{i}", device)
        targs.per_device_train_batch_size = pairs_per_batch
        trainer = RewardTrainer(model=model, args=targs, train_dataset=dataset, processing_class=load_tokenizer(policy))
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        return len(rows) * config.num_epochs / (time.perf_counter() - start)

    torch.set_num_threads(torch.get_num_threads())
    run_ours(-1)  # warm-up (imports, allocator)
    ours, theirs = [], []
    for i in range(args.repeats):
        theirs.append(run_trl(i))
        ours.append(run_ours(i))
    o, t = statistics.median(ours), statistics.median(theirs)
    print(
        f"setup: gpt2-size={args.gpt2_size} {SIZES[args.gpt2_size]} device={args.device} "
        f"pairs={len(rows)} ({args.groups} rankings of K={k}) batch={pairs_per_batch} pairs, "
        f"1 epoch, {args.repeats} alternating repeats, trl {__import__('trl').__version__}"
    )
    print("ours   pairs/s: " + ", ".join(f"{x:.1f}" for x in ours) + f"  median {o:.1f}")
    print("trl    pairs/s: " + ", ".join(f"{x:.1f}" for x in theirs) + f"  median {t:.1f}")
    print(f"ratio ours/trl (median pairs/s): {o / t:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
