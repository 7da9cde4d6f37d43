"""Our PPO (rlhf/training/ppo.py) against trl 1.12's PPOTrainer on the same tiny setup.

Same SFT policy, reward model (also the value model's initial weights), prompts and PPO
settings. trl 1.12.0 (the last release with PPOTrainer) is installed into a separate
virtualenv that reuses this one's other packages. Both sides do the same work, counted and
printed (episodes, PPO steps, sequences sampled, optimizer steps, generate calls; the run stops
if they differ); runs alternate trl / ours in pairs since the machine's speed drifts. Prints
episodes/s over the PPO loop for both, each pair's ratio (target >= 1.0) and the reward and KL
curves side by side.

  python bench/ppo_vs_trl.py [--device cpu|cuda] [--gpt2-size tiny|small] [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
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


def ensure_trl112_venv(path: Path) -> Path:
    """A virtualenv with trl==1.12.0 whose other packages come from this one (via a .pth)."""
    python = path / "bin" / "python"
    if python.exists():
        check = subprocess.run([str(python), "-c", "import trl;print(trl.__version__)"], capture_output=True, text=True)
        if check.stdout.strip() == "1.12.0":
            return python
    subprocess.run([sys._base_executable, "-m", "venv", str(path)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import site as this_site

    Path(site, "_parent_venv.pth").write_text(this_site.getsitepackages()[0] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "trl==1.12.0"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--gpt2-size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=8, help="PPO steps (rollouts)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--response-length", type=int, default=16)
    parser.add_argument("--engine", default="hf_fast", choices=["hf", "hf_fast"], help="our rollout engine")
    parser.add_argument("--repeats", type=int, default=2, help="alternating trl/ours pairs")
    parser.add_argument("--venv", default=str(ROOT / "bench" / ".venv-trl112"))
    args = parser.parse_args()

    from transformers import GPT2LMHeadModel

    from rlhf.training.config import ModelConfig, PPOConfig, RewardModelConfig
    from rlhf.training.models import render_prompt
    from rlhf.training.ppo import run_ppo
    from rlhf.training.rows import ComparisonRow, PromptRow
    from rlhf.training.tiny import build_tiny_tokenizer, load_corpus, train_demo_sft

    python112 = ensure_trl112_venv(Path(args.venv))
    work = Path(tempfile.mkdtemp(prefix="ppo-bench-"))
    size = SIZES[args.gpt2_size]
    if args.gpt2_size == "tiny":
        policy = train_demo_sft(work / "sft", quick=True)["model_path"]
    else:
        from rlhf.training.tiny import tiny_gpt2_config

        tok = build_tiny_tokenizer()
        GPT2LMHeadModel(tiny_gpt2_config(tok, **size)).save_pretrained(work / "sft")
        tok.save_pretrained(work / "sft")
        policy = str(work / "sft")
    # A reward model from the SFT policy, trained briefly to prefer answers containing " is".
    corpus = load_corpus()
    rows = [
        ComparisonRow(prompt=r["instruction"], chosen=r["answer"], rejected=r["answer"].split(" ")[0], group_id=str(i))
        for i, r in enumerate(corpus[:64])
    ]
    reward = str(work / "rm")
    from rlhf.training.reward import train_reward_model

    train_reward_model(
        RewardModelConfig(
            model=ModelConfig(model_name_or_path=policy, device=args.device),
            learning_rate=1e-3,
            max_pairs_per_batch=16,
            normalize_rewards=False,  # trl reads the raw head: both sides then optimise the same reward
        ),
        rows,
        output_dir=reward,
    )
    prompts = [PromptRow(id=str(i), text=r["instruction"]) for i, r in enumerate(corpus[:128])]
    config = PPOConfig(
        total_episodes=args.steps * args.batch_size,
        batch_size=args.batch_size,
        mini_batch_size=args.batch_size // 2,
        num_ppo_epochs=4,
        response_length=args.response_length,
        temperature=0.7,
        learning_rate=3e-4,
        kl_coef=0.05,
        missing_eos_penalty=1.0,
        value_model="reward",
        rollout_engine=args.engine,
        device=args.device,
        seed=1,
        save_every=0,  # no checkpoints: trl's runner writes none either
    )
    tokenizer = build_tiny_tokenizer()
    spec = {
        "policy": policy,
        "reward": reward,
        "seed": 1,
        "device": args.device,
        "output_dir": str(work / "trl112"),
        "total_episodes": config.total_episodes,
        "batch_size": config.batch_size,
        "mini_batch_size": config.mini_batch_size,
        "num_ppo_epochs": config.num_ppo_epochs,
        "response_length": config.response_length,
        "temperature": config.temperature,
        "learning_rate": config.learning_rate,
        "kl_coef": config.kl_coef,
        "missing_eos_penalty": config.missing_eos_penalty,
        "prompt_texts": [render_prompt(tokenizer, p.content, use_chat_template=True) for p in prompts],
    }
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))

    def run_trl() -> dict:
        # trl 1.12 in its own process (its own virtualenv).
        proc = subprocess.run(
            [str(python112), str(ROOT / "bench" / "_trl112_ppo_runner.py"), "--spec", str(spec_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ""},
        )
        if proc.returncode != 0:
            print(proc.stderr[-4000:])
            raise SystemExit("trl 1.12 PPOTrainer run failed")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def run_ours(index: int) -> dict:
        # Same settings; timed by the wall clock from the start of the first PPO step to the end of the
        # last (everything between steps included), as trl's side is from on_train_begin to its last step.
        history: list[dict] = []
        ends: list[float] = []

        def progress(step: int, total: int, metrics: dict) -> None:
            ends.append(time.perf_counter())
            history.append(metrics)

        run_ppo(
            config,
            prompts,
            policy_path=policy,
            ref_path=policy,
            reward_path=reward,
            output_dir=work / f"ours-{index}",
            on_progress=progress,
        )
        last = history[-1]
        first_step = config.batch_size / history[0]["ppo/episodes_per_s"]
        return {
            "loop_seconds": ends[-1] - ends[0] + first_step,
            "episodes": int(last["ppo/episode"]),
            "ppo_steps": len(history),
            "rollouts": int(last["ppo/rollouts"]),
            "optimizer_steps": int(last["ppo/optimizer_steps"]),
            "generate_calls": int(last["ppo/generate_calls"]),
            "reward": [m["ppo/score"] for m in history],
            "kl": [m["ppo/kl"] for m in history],
        }

    print(
        f"setup: gpt2-size={args.gpt2_size} {size} device={args.device} steps={args.steps} "
        f"batch={args.batch_size} minibatch={config.mini_batch_size} ppo_epochs={config.num_ppo_epochs} "
        f"response_length={args.response_length} engine={config.rollout_engine} (trl 1.12 in {args.venv})"
    )
    work_keys = ("episodes", "ppo_steps", "rollouts", "optimizer_steps", "generate_calls")
    print(f"{'run':>3} {'side':>6} | {'episodes/s':>10} {'loop s':>7} | " + " ".join(f"{k:>15}" for k in work_keys))
    ratios: list[float] = []
    ours = theirs = {}
    for i in range(args.repeats):  # alternate the two sides: the machine's speed drifts
        pair = {}
        for side in ("trl112", "ours") if i % 2 == 0 else ("ours", "trl112"):
            pair[side] = run_trl() if side == "trl112" else run_ours(i)
        ours, theirs = pair["ours"], pair["trl112"]
        for side in ("ours", "trl112"):
            r = pair[side]
            eps = r["episodes"] / r["loop_seconds"]
            print(
                f"{i + 1:>3} {side:>6} | {eps:10.2f} {r['loop_seconds']:7.2f} | "
                + " ".join(f"{r[k]:>15}" for k in work_keys)
            )
        unequal = [k for k in work_keys if ours[k] != theirs[k]]
        if unequal:
            raise SystemExit(f"unequal work ({', '.join(unequal)}): the comparison would not be fair")
        ratio = (ours["episodes"] / ours["loop_seconds"]) / (theirs["episodes"] / theirs["loop_seconds"])
        ratios.append(ratio)
        print(f"    pair {i + 1}: ours/trl112 episodes/s = {ratio:.2f}")
    print(
        f"ratio ours/trl112 episodes/s, equal work: median {statistics.median(ratios):.2f} "
        f"(pairs in order: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 1.0)"
    )
    print(f"{'step':>4} | {'ours reward':>11} {'ours kl':>8} | {'trl reward':>10} {'trl kl':>8}  (last pair)")
    for i in range(max(len(ours["reward"]), len(theirs["reward"]))):
        o = f"{ours['reward'][i]:11.3f} {ours['kl'][i]:8.3f}" if i < len(ours["reward"]) else f"{'':11} {'':8}"
        t = f"{theirs['reward'][i]:10.3f} {theirs['kl'][i]:8.3f}" if i < len(theirs["reward"]) else ""
        print(f"{i + 1:>4} | {o} | {t}")


if __name__ == "__main__":
    main()
