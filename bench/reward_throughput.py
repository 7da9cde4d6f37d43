"""Reward-model training pairs/s: our train_reward_model vs trl's RewardTrainer, at K=4 and K=9.

Same work on both sides, in the same process:
- the same model (a randomly initialised GPT-2 of --gpt2-size, its scalar head seeded the same),
- the same comparisons: --rankings rankings of K responses, all C(K, 2) pairs of each,
- the same pairs per optimizer step (--rankings-per-step whole rankings: ours packs whole
  rankings up to max_pairs_per_batch = rankings-per-step x C(K, 2); trl gets
  per_device_train_batch_size = that many pairs), the same optimizer settings, one epoch,
- fp32 on the same device; our reward normalisation pass (normalize_rewards) is switched off
  because trl does no such pass.
What differs is how the pairs are scored: trl forwards 2 sequences per pair (chosen and
rejected), ours forwards each of the K responses of a ranking once and forms all C(K, 2) pairs
from the K rewards. The script counts the work itself: optimizer steps (a global optimizer-step
hook) and sequences / padded tokens through the token embedding (a wrapper around
nn.Embedding.forward), and prints them next to ours' own `reward/forwards`.

Runs alternate ours, trl, ours, trl, ... after one untimed warm-up of each; every pair of runs
is printed with its ratio, then the medians. pairs/s = pairs trained / training-loop seconds
(ours: the `reward/train_seconds` it reports; trl: `trainer.train()`); the wall time of the
whole call (load, tokenize, train, save) is printed too.

Targets: ours/trl pairs/s >= 2.5 at K=4 and >= 6 at K=9.

  python bench/reward_throughput.py                       # K=4 and K=9, gpt2-size base, 2 pairs of runs
  python bench/reward_throughput.py --k 9 --repeats 3 --gpt2-size small --rankings 40
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
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
    "base": {"n_embd": 256, "n_layer": 4, "n_head": 4},
    "medium": {"n_embd": 384, "n_layer": 6, "n_head": 6},
    "small": {"n_embd": 768, "n_layer": 12, "n_head": 12},  # GPT-2 small's shape, random init
}
TARGETS = {4: 2.5, 9: 6.0}
WORDS = ["river", "garden", "music", "window", "planet", "pencil", "cloud", "bridge", "summer", "stone"]


def comparisons(n_groups: int, k: int, *, words: int = 12, seed: int = 0) -> list:
    """Rankings of k distinct responses (more 'good' words rank higher): C(k, 2) pairs per ranking."""
    from rlhf.training.rows import ComparisonRow

    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        prompt = f"Say something about the {rng.choice(WORDS)} and the {rng.choice(WORDS)}."
        counts = rng.sample(range(k + 2), k)
        responses = []
        for n in counts:
            text = [rng.choice(WORDS) for _ in range(words)] + ["good"] * n
            rng.shuffle(text)
            responses.append((n, " ".join(text)))
        for (a, ta), (b, tb) in itertools.combinations(responses, 2):
            chosen, rejected = (ta, tb) if a > b else (tb, ta)
            rows.append(ComparisonRow(prompt=prompt, chosen=chosen, rejected=rejected, group_id=f"{k}-{g}"))
    return rows


class WorkCounter:
    """Counts optimizer steps (global hook) and sequences/tokens through the token embedding."""

    def __init__(self, vocab_size: int) -> None:
        import torch

        self.vocab_size = vocab_size
        self.optimizer_steps = 0
        self.sequences = 0
        self.tokens = 0
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._hook = register_optimizer_step_post_hook(self._on_step)
        self._orig = torch.nn.Embedding.forward
        counter = self

        def forward(module: torch.nn.Embedding, input: torch.Tensor) -> torch.Tensor:
            if module.num_embeddings == counter.vocab_size and input.dim() == 2:
                counter.sequences += int(input.shape[0])
                counter.tokens += int(input.numel())
            return counter._orig(module, input)

        torch.nn.Embedding.forward = forward  # type: ignore[method-assign]

    def _on_step(self, *args: object) -> None:
        self.optimizer_steps += 1

    def snapshot(self) -> tuple[int, int, int]:
        return self.optimizer_steps, self.sequences, self.tokens

    def since(self, snap: tuple[int, int, int]) -> dict[str, int]:
        now = self.snapshot()
        return {"optimizer_steps": now[0] - snap[0], "sequences": now[1] - snap[1], "tokens": now[2] - snap[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpt2-size", default="base", choices=sorted(SIZES))
    parser.add_argument("--k", type=int, nargs="+", default=[4, 9], help="responses per ranking")
    parser.add_argument(
        "--rankings",
        type=int,
        nargs="+",
        default=None,
        help="rankings per K (one number, or one per --k); default 96 at K=4, 24 at K=9",
    )
    parser.add_argument("--rankings-per-step", type=int, default=2, help="whole rankings per optimizer step")
    parser.add_argument("--words", type=int, default=12, help="filler words per response (length of a response)")
    parser.add_argument("--repeats", type=int, default=2, help="timed (ours, trl) pairs of runs per K")
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()
    default_rankings = {4: 96, 9: 24}
    if args.rankings is None:
        rankings = [default_rankings.get(k, 32) for k in args.k]
    elif len(args.rankings) == 1:
        rankings = args.rankings * len(args.k)
    else:
        rankings = args.rankings
    if len(rankings) != len(args.k):
        parser.error("--rankings: give one number or one per --k")

    import datasets
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from rlhf.training.config import ModelConfig, RewardModelConfig
    from rlhf.training.models import load_tokenizer, render_prompt, resolve_device
    from rlhf.training.reward import train_reward_model
    from rlhf.training.tiny import build_tiny_policy

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="rm-bench-"))
    policy = build_tiny_policy(work / "policy", **SIZES[args.gpt2_size])
    tokenizer = load_tokenizer(policy)
    n_params = sum(
        p.numel() for p in AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1).parameters()
    )
    device = resolve_device(args.device)
    counter = WorkCounter(len(tokenizer))
    rm_fields = {f.name for f in dataclasses.fields(RewardModelConfig)}
    print(
        f"setup: gpt2-size={args.gpt2_size} {SIZES[args.gpt2_size]} ({n_params / 1e6:.1f}M params) "
        f"device={args.device} torch threads={torch.get_num_threads()} fp32, {args.epochs:g} epoch(s), "
        f"{args.rankings_per_step} rankings per optimizer step, trl {trl.__version__}, "
        f"transformers {transformers.__version__}"
    )
    if "normalize_rewards" not in rm_fields:
        print("note: RewardModelConfig has no normalize_rewards field yet (contract field missing)")

    summary = []
    for k, n_rankings in zip(args.k, rankings, strict=True):
        rows = comparisons(n_rankings, k, words=args.words)
        pairs_per_step = args.rankings_per_step * math.comb(k, 2)
        extra = {"normalize_rewards": False} if "normalize_rewards" in rm_fields else {}
        config = RewardModelConfig(
            model=ModelConfig(model_name_or_path=policy, device=args.device),
            learning_rate=1e-4,
            num_epochs=args.epochs,
            max_pairs_per_batch=pairs_per_step,
            logging_steps=10,
            **extra,
        )
        # trl direct: its own preprocessing of (prompt, chosen, rejected) text; it appends EOS,
        # as our render_conversation does.
        dataset = Dataset.from_dict(
            {
                "prompt": [render_prompt(tokenizer, r.prompt, use_chat_template=True) for r in rows],
                "chosen": [r.chosen for r in rows],
                "rejected": [r.rejected for r in rows],
            }
        )

        def run_ours(tag: str, rows=rows, config=config, k=k) -> dict:
            snap = counter.snapshot()
            start = time.perf_counter()
            result = train_reward_model(config, rows, output_dir=work / f"ours-{k}-{tag}")
            wall = time.perf_counter() - start
            m = result.metrics
            return {
                "pairs": int(m["reward/train_pairs"] * config.num_epochs),
                "seconds": float(m["reward/train_seconds"]),
                "wall": wall,
                "reported_forwards": m.get("reward/forwards"),
                **counter.since(snap),
            }

        def run_trl(tag: str, rows=rows, config=config, dataset=dataset, pairs_per_step=pairs_per_step, k=k) -> dict:
            snap = counter.snapshot()
            start = time.perf_counter()
            transformers.set_seed(config.seed)  # before loading: the fresh head is seeded as ours is
            model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1).to(device)
            model.config.pad_token_id = tokenizer.pad_token_id
            targs = RewardConfig(
                output_dir=str(work / f"trl-{k}-{tag}"),
                per_device_train_batch_size=pairs_per_step,
                gradient_accumulation_steps=1,
                learning_rate=config.learning_rate,
                num_train_epochs=config.num_epochs,
                lr_scheduler_type="linear",
                logging_steps=10,
                save_strategy="no",
                report_to="none",
                bf16=False,
                gradient_checkpointing=False,
                use_cpu=device.type == "cpu",
                seed=config.seed,
                max_length=None,
                disable_dropout=True,
                dataloader_pin_memory=False,
                disable_tqdm=True,
            )
            trainer = RewardTrainer(
                model=model, args=targs, train_dataset=dataset, processing_class=load_tokenizer(policy)
            )
            trainer.remove_callback(PrinterCallback)
            loop_start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - loop_start
            trainer.model.save_pretrained(work / f"trl-{k}-{tag}" / "model")
            wall = time.perf_counter() - start
            return {
                "pairs": int(len(rows) * config.num_epochs),
                "seconds": seconds,
                "wall": wall,
                **counter.since(snap),
            }

        # warm-up: one short untimed run of each (imports, allocator, kernels)
        warm_rows = rows[: 2 * pairs_per_step]
        run_ours("warm", rows=warm_rows)
        run_trl("warm", rows=warm_rows, dataset=dataset.select(range(len(warm_rows))))
        pairs_of_runs = []
        for i in range(args.repeats):
            o = run_ours(str(i))
            t = run_trl(str(i))
            pairs_of_runs.append((o, t))

        print(
            f"\nK={k}: {n_rankings} rankings x {math.comb(k, 2)} pairs = {len(rows)} pairs, "
            f"{pairs_per_step} pairs ({args.rankings_per_step} rankings) per optimizer step"
        )
        print(
            f"  {'run':<8} {'side':<5} {'pairs':>6} {'opt steps':>9} {'seqs fwd':>8} {'tokens fwd':>10} "
            f"{'reported fwd':>12} {'loop s':>8} {'wall s':>8} {'pairs/s':>8}"
        )
        ratios = []
        for i, (o, t) in enumerate(pairs_of_runs):
            for side, r in (("ours", o), ("trl", t)):
                rep = r.get("reported_forwards")
                rep_s = "-" if side == "trl" else ("missing" if rep is None else f"{int(rep)}")
                print(
                    f"  {'pair ' + str(i + 1):<8} {side:<5} {r['pairs']:>6} {r['optimizer_steps']:>9} "
                    f"{r['sequences']:>8} {r['tokens']:>10} {rep_s:>12} {r['seconds']:>8.2f} {r['wall']:>8.2f} "
                    f"{r['pairs'] / r['seconds']:>8.1f}"
                )
            ratio = (o["pairs"] / o["seconds"]) / (t["pairs"] / t["seconds"])
            ratios.append(ratio)
            print(
                f"  {'':<8} ratio ours/trl pairs/s {ratio:.2f} (wall {t['wall'] / o['wall']:.2f}); "
                f"sequences forwarded trl/ours {t['sequences'] / max(o['sequences'], 1):.2f}"
            )
        o_med = statistics.median(o["pairs"] / o["seconds"] for o, _ in pairs_of_runs)
        t_med = statistics.median(t["pairs"] / t["seconds"] for _, t in pairs_of_runs)
        same = all(o["pairs"] == t["pairs"] and o["optimizer_steps"] == t["optimizer_steps"] for o, t in pairs_of_runs)
        target = TARGETS.get(k)
        verdict = "" if target is None else f"(target >= {target}: {'met' if o_med / t_med >= target else 'NOT met'})"
        print(
            f"  median pairs/s ours {o_med:.1f}, trl {t_med:.1f}; ratio of medians {o_med / t_med:.2f} {verdict}; "
            f"same pairs and optimizer steps on both sides: {same}"
        )
        summary.append((k, o_med / t_med, ratios, target))

    print("\nsummary:")
    for k, ratio, ratios, target in summary:
        print(
            f"  K={k}: ours/trl pairs/s {ratio:.2f} (pairs of runs: {', '.join(f'{r:.2f}' for r in ratios)})"
            + (f", target >= {target}" if target else "")
        )


if __name__ == "__main__":
    main()
