"""Load policies, reward models and tokenizers from a local path or a hub id."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf.training.config import ModelConfig
from rlhf.training.rows import Message, PromptInput

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """auto -> bfloat16 on a GPU that supports it, float32 otherwise."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _DTYPES[dtype]


def load_tokenizer(path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none) and left padding for generation."""
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise ValueError(f"model_name_or_path: tokenizer at {path!r} has no EOS token")
    return tokenizer


def check_tokenizer_matches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, field: str) -> None:
    """Raise ValueError naming `field` when the tokenizer's ids do not fit the model's embeddings."""
    embeddings: Any = model.get_input_embeddings()
    vocab = int(embeddings.weight.shape[0])
    if len(tokenizer) > vocab:
        raise ValueError(
            f"{field}: tokenizer has {len(tokenizer)} tokens but the model's embedding has {vocab} "
            "rows (mismatched tokenizer)"
        )


def check_same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, *, field: str) -> None:
    """Raise ValueError naming `field` when two tokenizers would encode text differently."""
    probe = "The quick brown fox: 12 + 30 = 42."
    if a.get_vocab() != b.get_vocab() or a(probe)["input_ids"] != b(probe)["input_ids"]:
        raise ValueError(f"{field}: tokenizer differs from the policy's (mismatched tokenizer)")


def _apply_lora(model: PreTrainedModel, config: ModelConfig, task_type: str) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules) or None,
        task_type=task_type,
    )
    return get_peft_model(model, lora)


def load_policy(config: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Causal LM and its tokenizer, placed and typed as configured, with LoRA when lora_r > 0."""
    config.validate()
    device = resolve_device(config.device)
    model: Any = AutoModelForCausalLM.from_pretrained(
        config.model_name_or_path,
        dtype=resolve_dtype(config.dtype, device),
        trust_remote_code=config.trust_remote_code,
    )
    model = model.to(device)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    check_tokenizer_matches(model, tokenizer, field="model_name_or_path")
    if config.lora_r > 0:
        model = _apply_lora(model, config, "CAUSAL_LM")
    return model, tokenizer


def load_reward_model(config: ModelConfig, *, lora: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Scalar-head sequence classifier (num_labels=1).

    From a causal-LM checkpoint (the SFT policy) the transformer weights are reused and a fresh
    head is initialised, as InstructGPT does.
    """
    config.validate()
    device = resolve_device(config.device)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    model: Any = AutoModelForSequenceClassification.from_pretrained(
        config.model_name_or_path,
        num_labels=1,
        dtype=resolve_dtype(config.dtype, device),
        trust_remote_code=config.trust_remote_code,
    ).to(device)
    # Sequence classifiers read the reward at the last non-pad token.
    model.config.pad_token_id = tokenizer.pad_token_id
    check_tokenizer_matches(model, tokenizer, field="model_name_or_path")
    if lora and config.lora_r > 0:
        model = _apply_lora(model, config, "SEQ_CLS")
    return model, tokenizer


def as_messages(prompt: PromptInput) -> list[Message]:
    """A prompt as chat messages (a plain string becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: PromptInput, *, use_chat_template: bool) -> str:
    """Prompt text ready for generation: chat template with generation prompt when it has one."""
    if use_chat_template and tokenizer.chat_template:
        text = tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
        return str(text)
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt) + "\nassistant: "


def render_conversation(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptInput,
    response: str,
    *,
    use_chat_template: bool = True,
) -> str:
    """Prompt + response as the policy would have produced it, ending with EOS."""
    head = render_prompt(tokenizer, prompt, use_chat_template=use_chat_template)
    eos = tokenizer.eos_token or ""
    return head + response + eos
