"""Peak memory per parameter of reward-model training and of a PPO step, by precision.

A Llama-style model built from config (random weights, no download; 88M parameters by default)
is trained in each setting in a fresh process: float32, bf16 mixed precision (float32 master
weights and optimizer state, bf16 compute, frozen models held in bf16) and bf16 + LoRA (the frozen
base in bf16, adapters in float32; for PPO the reference is the policy with its adapter disabled).
PPO uses a value head on the policy (value_model=head) and the same model as reward model.

For each it prints, in bytes per parameter of the model (the policy for PPO):
- state: what stays resident, counted tensor by tensor: the weights of every model (policy,
  reference, reward model, critic), the optimizer's state and the gradients (float32, one per
  trained parameter, alive from backward to the optimizer step);
- peak: the measured peak over the training step(s) above the process's memory before the models
  were loaded (CUDA: torch.cuda.max_memory_allocated; CPU: the peak resident set, VmHWM, reset after
  loading so the loader's transient copies are not counted): state + activations and transients;
and the model state projected to 1B and 8B parameters (activations depend on batch and length, not
on the parameter count, and are left out of the projection). Targets: mixed-precision PPO state
<= 20 bytes/param, LoRA PPO state <= 4 bytes/param.

  python bench/memory.py [--size 100m|tiny] [--device cpu|cuda] [--only rm-fp32,ppo-lora]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETTINGS = {  # name -> (stage, mixed_precision, lora_r)
    "rm-fp32": ("rm", "no", 0),
    "rm-bf16": ("rm", "bf16", 0),
    "rm-lora": ("rm", "bf16", 16),
    "ppo-fp32": ("ppo", "no", 0),
    "ppo-bf16": ("ppo", "bf16", 0),
    "ppo-lora": ("ppo", "bf16", 16),
}
TARGETS = {"ppo-bf16": 20.0, "ppo-lora": 4.0}
GIB = 1024**3


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMeter:
    """Peak memory above a baseline: CUDA allocator statistics, or the CPU's resident set."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device == "cuda"
        self.baseline = self._current()

    def _current(self) -> int:
        if self.cuda:
            return self.torch.cuda.memory_allocated()
        return _status_kib("VmRSS") * 1024

    def reset(self) -> None:
        """Forget the peak so far (the loader's transients)."""
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def peak(self) -> int:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() - self.baseline
        return _status_kib("VmHWM") * 1024 - self.baseline


def _tensor_bytes(tensors) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:  # tied or shared weights count once
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


def _base_params(model) -> int:
    """Parameters of the model itself (LoRA adapters and peft's trained head copies left out)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n and "modules_to_save" not in n)


def _optimizer_bytes(optimizer) -> int:
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    return _tensor_bytes(v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def _rankings(n: int, k: int):
    from rlhf.training.rows import ComparisonRow
    from rlhf.training.tiny import load_corpus

    corpus = load_corpus()
    rows = []
    for g in range(n):
        answers = [corpus[(g * k + j) % len(corpus)]["answer"] for j in range(k)]
        for a in range(k):
            for b in range(a + 1, k):
                rows.append(
                    ComparisonRow(
                        prompt=corpus[g]["instruction"], chosen=answers[a], rejected=answers[b], group_id=str(g)
                    )
                )
    return rows


def child(name: str, model_path: str, device: str) -> dict:
    """One setting in this (fresh) process; returns the figures."""
    from rlhf.training.config import ModelConfig, PPOConfig, RewardModelConfig

    stage, mixed, lora_r = SETTINGS[name]
    meter = PeakMeter(device)
    if stage == "rm":
        from rlhf.training.reward import build_reward_trainer

        config = RewardModelConfig(
            model=ModelConfig(model_name_or_path=model_path, device=device, mixed_precision=mixed, lora_r=lora_r),
            max_pairs_per_batch=12,
            max_length=128,
            normalize_rewards=False,
        )
        rows = _rankings(8, 4)  # 8 rankings of K=4: 48 pairs, 4 optimizer steps of 2 rankings
        trainer, _, _, _ = build_reward_trainer(config, rows, output_dir=Path(tempfile.mkdtemp()))
        meter.reset()
        trainer.train()
        peak = meter.peak()
        model = trainer.model
        params = _base_params(model)
        weights = _tensor_bytes(model.parameters())
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = _optimizer_bytes(trainer.optimizer)
        work = f"{len(rows)} pairs, 32 sequences of <= 128 tokens, 4 optimizer steps"
    else:
        from rlhf.training.ppo import encode_prompts, ppo_rollout, ppo_score, ppo_setup, ppo_update
        from rlhf.training.rows import PromptRow
        from rlhf.training.tiny import load_corpus

        config = PPOConfig(
            total_episodes=8,
            batch_size=8,
            mini_batch_size=4,
            num_ppo_epochs=1,
            response_length=32,
            temperature=0.7,
            value_model="head",
            device=device,
            mixed_precision=mixed,
            lora_r=lora_r,
            forward_batch_size=8,
            missing_eos_penalty=0.0,
        )
        prompts = [PromptRow(id=str(i), text=r["instruction"]) for i, r in enumerate(load_corpus()[:8])]
        setup = ppo_setup(config, policy_path=model_path, ref_path=model_path, reward_path=model_path)
        queries = encode_prompts(setup.tokenizer, prompts, config)
        meter.reset()
        batch = ppo_score(setup, ppo_rollout(setup, prompts, queries))
        ppo_update(setup, batch, [])
        peak = meter.peak()
        policy = setup.accelerator.unwrap_model(setup.policy)
        params = _base_params(policy)
        models = [setup.policy, setup.value_model, setup.ref_policy, setup.reward_model]
        weights = _tensor_bytes(p for m in models if m is not None for p in m.parameters())
        trained = setup.params
        optimizer = _optimizer_bytes(setup.optimizer)
        work = "8 rollouts of 32 tokens, 2 minibatch updates (policy, value head; reference; reward model)"
    gradients = sum(p.numel() * 4 for p in trained)  # float32 grads, alive from backward to step
    return {
        "name": name,
        "params": params,
        "trained": sum(p.numel() for p in trained),
        "weights": weights,
        "optimizer": optimizer,
        "gradients": gradients,
        "peak": peak,
        "device": device,
        "torch_dtype": str({p.dtype for p in trained}),
        "work": work,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100m", choices=["tiny", "100m"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", default="", help="comma-separated settings: " + ", ".join(SETTINGS))
    parser.add_argument("--child", nargs=3, metavar=("SETTING", "MODEL", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(*args.child)))
        return

    from bench._models import build_llama

    model_path = Path(tempfile.mkdtemp(prefix="memory-bench-")) / "model"
    n = build_llama(model_path, args.size)
    names = [s for s in args.only.split(",") if s] or list(SETTINGS)
    print(f"model: Llama-style {args.size} from config, {n / 1e6:.1f}M parameters; device {args.device}")
    header = (
        f"{'setting':>9} | {'weights':>7} {'optim':>6} {'grads':>6} {'state':>6} | {'peak':>6} {'act+tr':>6}"
        f" | {'state @1B':>9} {'state @8B':>9} | target"
    )
    print("bytes per parameter (state = weights + optimizer + gradients; peak measured)")
    print(header)
    for name in names:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, str(model_path), args.device],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stderr[-3000:])
            raise SystemExit(f"{name} failed")
        r = json.loads(lines[-1][len("RESULT ") :])
        p = r["params"]
        state = (r["weights"] + r["optimizer"] + r["gradients"]) / p
        peak = r["peak"] / p
        target = TARGETS.get(name)
        verdict = "" if target is None else f"<= {target:g}: {'met' if state <= target else 'NOT met'}"
        print(
            f"{name:>9} | {r['weights'] / p:7.2f} {r['optimizer'] / p:6.2f} {r['gradients'] / p:6.2f} {state:6.2f}"
            f" | {peak:6.2f} {peak - state:6.2f} | {state * 1e9 / GIB:7.1f}Gi {state * 8e9 / GIB:7.1f}Gi | {verdict}"
        )
        print(f"{'':>9}   trained {r['trained'] / 1e6:.2f}M params {r['torch_dtype']}; {r['work']}")


if __name__ == "__main__":
    main()
