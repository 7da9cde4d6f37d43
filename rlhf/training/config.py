"""One frozen config dataclass per stage, with help text on every field.

Configs are stored as JSON on a training run: `to_dict()` gives a JSON-able dict and
`from_dict()` rebuilds the config, raising ValueError naming any unknown or badly typed field.
`validate()` raises ValueError("<field>: <what is wrong>").
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

_C = TypeVar("_C", bound="_Config")

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")
MIXED_PRECISION = ("no", "bf16", "fp16")
ROLLOUT_ENGINES = ("hf", "hf_fast", "vllm")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


class _Config:
    """Shared to_dict / from_dict / validate behaviour for the stage configs."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (nested configs as dicts, tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Build from a dict; unknown fields or wrong types raise ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field for {cls.__name__}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            kwargs[name] = _coerce(name, hints[name], value)
        return cls(**kwargs)

    def help(self) -> dict[str, str]:
        """Field name -> help text (for forms and docs)."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def validate(self) -> None:  # pragma: no cover - overridden
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(name, non_none[0], value)
    if isinstance(hint, type) and issubclass(hint, _Config):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected an object, got {type(value).__name__}")
        try:
            return hint.from_dict(value)
        except ValueError as exc:
            raise ValueError(f"{name}.{exc}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name}: expected a list of strings")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {value!r}")
        return value
    return value


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")


def _check_precision(mixed_precision: str, dtype: str) -> None:
    _require(mixed_precision in MIXED_PRECISION, "mixed_precision", f"must be one of {', '.join(MIXED_PRECISION)}")
    # Mixed precision keeps float32 master weights; half-precision weights would be pure half training.
    _require(
        mixed_precision == "no" or dtype in ("float32", "auto"),
        "dtype",
        "must be float32 or auto with mixed_precision (the trained weights stay in float32)",
    )


@dataclass(frozen=True)
class ModelConfig(_Config):
    """Where a model comes from and how it is placed."""

    model_name_or_path: str = _help("Local directory or hub id of the model.", "")
    dtype: str = _help("Weights dtype: auto, float32, float16 or bfloat16.", "float32")
    device: str = _help("Device: auto (cuda when available), cpu, cuda or mps.", "auto")
    trust_remote_code: bool = _help("Allow custom model code from the hub.", False)
    lora_r: int = _help("LoRA rank; 0 trains the full model.", 0)
    lora_alpha: int = _help("LoRA scaling alpha.", 16)
    lora_dropout: float = _help("LoRA dropout.", 0.05)
    lora_target_modules: tuple[str, ...] = _help(
        "Module names LoRA adapts; empty lets peft pick the defaults for the architecture.", ()
    )
    mixed_precision: str = _help(
        "no, bf16 or fp16: compute in half precision under autocast while the weights and the optimizer "
        "state stay in float32 (dtype must then be float32 or auto).",
        "no",
    )
    gradient_checkpointing: bool = _help(
        "Recompute activations in the backward pass (non-reentrant): less memory, ~30% more compute.", False
    )

    def validate(self) -> None:
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""
        _require(bool(self.model_name_or_path.strip()), "model_name_or_path", "must not be empty")
        _require(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        _require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        _check_precision(self.mixed_precision, self.dtype)
        _require(self.lora_r >= 0, "lora_r", "must be >= 0")
        _require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class GenerationConfig(_Config):
    """Sampling K responses per prompt from a policy."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The policy that writes the responses."})
    temperature: float = _help("Sampling temperature (> 0).", 1.0)
    top_p: float = _help("Nucleus sampling: keep the smallest token set with this mass.", 1.0)
    top_k: int = _help("Keep only the k most likely tokens; 0 disables.", 0)
    max_new_tokens: int = _help("Most tokens per response.", 64)
    max_prompt_length: int = _help("Prompts longer than this (tokens) are cut from the left.", 512)
    seed: int = _help("Random seed; the same seed and prompts give the same responses.", 0)
    batch_size: int = _help("Prompts per generate call (each yields K sequences).", 8)
    use_chat_template: bool = _help("Wrap prompts in the tokenizer's chat template (with the generation prompt).", True)

    def validate(self) -> None:
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""
        self.model.validate()
        _require(self.temperature > 0, "temperature", "must be > 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _require(self.top_k >= 0, "top_k", "must be >= 0")
        _require(self.max_new_tokens > 0, "max_new_tokens", "must be > 0")
        _require(self.max_prompt_length > 0, "max_prompt_length", "must be > 0")
        _require(self.batch_size > 0, "batch_size", "must be > 0")


@dataclass(frozen=True)
class RewardModelConfig(_Config):
    """Reward-model training with trl's RewardTrainer (grouped, weighted Bradley-Terry)."""

    model: ModelConfig = field(
        default_factory=ModelConfig,
        metadata={"help": "Initial weights: the SFT policy (a fresh head is added) or any model."},
    )
    learning_rate: float = _help("AdamW learning rate.", 1e-5)
    num_epochs: float = _help("Passes over the training comparisons (InstructGPT: 1).", 1.0)
    max_pairs_per_batch: int = _help(
        "Whole rankings are packed into a batch up to this many pairs; a larger ranking is a "
        "batch of its own (its pairs are never split). Each response of a ranking is forwarded once.",
        32,
    )
    gradient_accumulation_steps: int = _help("Batches per optimizer step.", 1)
    weight_decay: float = _help("AdamW weight decay.", 0.0)
    warmup_ratio: float = _help("Fraction of steps for linear learning-rate warm-up.", 0.0)
    max_length: int = _help("Longest prompt + response in tokens; longer ones are cut.", 512)
    use_margin: bool = _help("Subtract each comparison's margin inside the sigmoid.", False)
    include_ties: bool = _help("Train on ties with the symmetric loss (pushes the two rewards together).", False)
    equal_prompt_weight: bool = _help(
        "Each ranking (group) carries equal total weight, as in InstructGPT section 3.5.", True
    )
    center_rewards_coefficient: float = _help(
        "Coefficient of the auxiliary loss that keeps rewards centred at 0; 0 disables.", 0.0
    )
    normalize_rewards: bool = _help(
        "After training, shift and scale the reward so that the training responses score mean 0 and "
        "standard deviation 1 (InstructGPT normalises on SFT samples); stored in the saved model's config "
        "(reward_offset, reward_scale) and applied wherever the model is read.",
        True,
    )
    weight_by_reliability: bool = _help(
        "Weight each comparison by its labeler's reliability (the quality report's skill estimate).", False
    )
    eval_batch_size: int = _help("Pairs per forward pass during evaluation.", 32)
    logging_steps: int = _help("Report progress every this many optimizer steps.", 1)
    seed: int = _help("Random seed (recorded on the result).", 42)

    def validate(self) -> None:
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""
        self.model.validate()
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(self.num_epochs > 0, "num_epochs", "must be > 0")
        _require(self.max_pairs_per_batch > 0, "max_pairs_per_batch", "must be > 0")
        _require(self.gradient_accumulation_steps > 0, "gradient_accumulation_steps", "must be > 0")
        _require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must be in [0, 1)")
        _require(self.max_length > 1, "max_length", "must be > 1")
        _require(self.eval_batch_size > 0, "eval_batch_size", "must be > 0")
        _require(self.logging_steps > 0, "logging_steps", "must be > 0")


@dataclass(frozen=True)
class PPOConfig(_Config):
    """PPO against a reward model with a per-token KL penalty to the SFT reference."""

    learning_rate: float = _help("AdamW learning rate for policy and value model.", 1e-5)
    total_episodes: int = _help("Responses sampled over the whole run (steps x batch_size).", 256)
    batch_size: int = _help("Prompts per rollout (one PPO step).", 16)
    mini_batch_size: int = _help("Responses per minibatch update.", 8)
    gradient_accumulation_steps: int = _help("Micro-batches each minibatch is split into.", 1)
    num_ppo_epochs: int = _help("Passes over each rollout batch.", 4)
    response_length: int = _help("Most tokens per sampled response.", 32)
    temperature: float = _help("Sampling temperature of the rollouts (> 0).", 1.0)
    top_p: float = _help("Nucleus sampling of the rollouts.", 1.0)
    max_prompt_length: int = _help("Prompts longer than this (tokens) are cut from the left.", 256)
    use_chat_template: bool = _help("Wrap prompts in the tokenizer's chat template.", True)
    gamma: float = _help("Discount factor for GAE.", 1.0)
    lam: float = _help("GAE lambda.", 0.95)
    cliprange: float = _help("PPO ratio clip range.", 0.2)
    cliprange_value: float = _help("Value clip range.", 0.2)
    vf_coef: float = _help("Value loss coefficient.", 0.1)
    ent_coef: float = _help("Entropy bonus coefficient.", 0.0)
    max_grad_norm: float = _help("Gradient norm clip; 0 disables.", 1.0)
    whiten_rewards: bool = _help("Whiten per-token rewards before GAE.", False)
    kl_coef: float = _help("beta: per-token KL penalty to the SFT reference (InstructGPT 0.02).", 0.02)
    kl_estimator: str = _help("KL estimator in the reward: k1 (default), k2, k3 or abs.", "k1")
    adaptive_kl: bool = _help("Adapt beta to keep the KL near kl_target (Ziegler et al.).", False)
    kl_target: float = _help("Target KL (nats per response) of the adaptive controller.", 6.0)
    kl_horizon: int = _help("Horizon (episodes) of the adaptive controller.", 10000)
    ptx_coef: float = _help(
        "gamma of PPO-ptx: weight of the LM loss on SFT rows in each update (InstructGPT 27.8); 0 disables.",
        0.0,
    )
    ptx_batch_size: int = _help("SFT rows per PPO-ptx LM-loss batch.", 4)
    missing_eos_penalty: float = _help("Subtracted from the score of responses that never emit EOS; 0 disables.", 1.0)
    value_model: str = _help(
        "reward: a separate value model initialised from the reward model; head: a fresh "
        "linear value head on the policy.",
        "reward",
    )
    dtype: str = _help("Weights dtype: auto, float32, float16 or bfloat16.", "float32")
    device: str = _help("Device: auto (cuda when available), cpu, cuda or mps.", "auto")
    mixed_precision: str = _help(
        "no, bf16 or fp16: autocast compute with float32 master weights and optimizer state; the frozen "
        "reference and reward models are held in that half precision. Logprobs and KL stay float32.",
        "no",
    )
    gradient_checkpointing: bool = _help("Recompute activations of policy and critic in the backward pass.", False)
    lora_r: int = _help(
        "LoRA rank for the policy and the critic; 0 trains the full models. With LoRA and a policy that is "
        "the reference, the reference is the policy with its adapter disabled (one base copy in memory).",
        0,
    )
    lora_alpha: int = _help("LoRA scaling alpha.", 16)
    rollout_engine: str = _help(
        "hf: transformers generate() with a complete sampling config; hf_fast: a KV-cache decoding loop "
        "that drops finished rows from the batch; vllm: vLLM colocated on the GPU (optional extra, CUDA).",
        "hf_fast",
    )
    rollout_batch_size: int = _help("Prompts per generation call; 0 samples the whole rollout batch at once.", 0)
    forward_batch_size: int = _help(
        "Sequences per no-grad scoring forward (policy, reference, value and reward model).", 16
    )
    static_cache: bool = _help("Engine hf: a static KV cache (cache_implementation='static'), for CUDA.", False)
    vllm_gpu_memory_utilization: float = _help("Engine vllm: share of GPU memory vLLM may take.", 0.3)
    save_every: int = _help(
        "Write a resumable checkpoint every this many steps (a run whose worker dies resumes from it); "
        "0: none until the end.",
        10,
    )
    num_sample_rows: int = _help("Prompt/response/reward rows kept in the result.", 8)
    seed: int = _help("Random seed (recorded on the result).", 42)

    def validate(self) -> None:
        """Raise ValueError("<field>: <what is wrong>") on a bad value."""
        _require(self.learning_rate > 0, "learning_rate", "must be > 0")
        _require(self.batch_size > 0, "batch_size", "must be > 0")
        _require(self.total_episodes >= self.batch_size, "total_episodes", "must be >= batch_size")
        _require(self.mini_batch_size > 0, "mini_batch_size", "must be > 0")
        _require(
            self.batch_size % self.mini_batch_size == 0,
            "mini_batch_size",
            "must divide batch_size",
        )
        _require(self.gradient_accumulation_steps > 0, "gradient_accumulation_steps", "must be > 0")
        _require(
            self.mini_batch_size % self.gradient_accumulation_steps == 0,
            "gradient_accumulation_steps",
            "must divide mini_batch_size",
        )
        _require(self.num_ppo_epochs > 0, "num_ppo_epochs", "must be > 0")
        _require(self.response_length > 0, "response_length", "must be > 0")
        _require(self.temperature > 0, "temperature", "must be > 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _require(self.max_prompt_length > 0, "max_prompt_length", "must be > 0")
        _require(0.0 <= self.gamma <= 1.0, "gamma", "must be in [0, 1]")
        _require(0.0 <= self.lam <= 1.0, "lam", "must be in [0, 1]")
        _require(self.cliprange > 0, "cliprange", "must be > 0")
        _require(self.cliprange_value > 0, "cliprange_value", "must be > 0")
        _require(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        _require(
            self.kl_estimator in ("k1", "k2", "k3", "abs"),
            "kl_estimator",
            "must be one of k1, k2, k3, abs",
        )
        _require(self.kl_target > 0, "kl_target", "must be > 0")
        _require(self.kl_horizon > 0, "kl_horizon", "must be > 0")
        _require(self.ptx_coef >= 0, "ptx_coef", "must be >= 0")
        _require(self.ptx_batch_size > 0, "ptx_batch_size", "must be > 0")
        _require(self.missing_eos_penalty >= 0, "missing_eos_penalty", "must be >= 0")
        _require(self.value_model in ("reward", "head"), "value_model", "must be reward or head")
        _require(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        _require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        _check_precision(self.mixed_precision, self.dtype)
        _require(self.lora_r >= 0, "lora_r", "must be >= 0")
        _require(
            self.rollout_engine in ROLLOUT_ENGINES, "rollout_engine", f"must be one of {', '.join(ROLLOUT_ENGINES)}"
        )
        _require(self.rollout_batch_size >= 0, "rollout_batch_size", "must be >= 0")
        _require(self.forward_batch_size > 0, "forward_batch_size", "must be > 0")
        _require(0.0 < self.vllm_gpu_memory_utilization <= 1.0, "vllm_gpu_memory_utilization", "must be in (0, 1]")
        _require(self.save_every >= 0, "save_every", "must be >= 0")
        _require(self.num_sample_rows >= 0, "num_sample_rows", "must be >= 0")

    @property
    def num_steps(self) -> int:
        """PPO steps (rollouts) in the run."""
        return self.total_episodes // self.batch_size
