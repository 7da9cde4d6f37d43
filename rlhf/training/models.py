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


def load_tokenizer(path: str, *, trust_remote_code: bool = False, require_eos: bool = True) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none).

    A policy needs an EOS token (responses end with it); a reward model need not have one
    (an encoder such as BERT reads its [CLS] token instead).
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if require_eos and tokenizer.eos_token_id is None:
        raise ValueError(f"model_name_or_path: tokenizer at {path!r} has no EOS token")
    if tokenizer.pad_token is None:
        raise ValueError(f"model_name_or_path: tokenizer at {path!r} has neither a pad nor an EOS token")
    return tokenizer


def eos_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and the model's generation EOS ids.

    Chat models end a turn with a token that is not `tokenizer.eos_token` (Llama-3's <|eot_id|>,
    Qwen's <|im_end|>); their generation_config lists it.
    """
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None)
    for token in [extra] if isinstance(extra, int) else list(extra or []):
        if int(token) not in ids:
            ids.append(int(token))
    return ids


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, *, max_length: int | None = None) -> list[int]:
    """Token ids of `text` as the model expects them: BOS / [CLS] ... [SEP] added by the tokenizer,
    unless a chat template already wrote the BOS into the text (templates are applied once).

    Longer texts keep their last tokens, and their first token when it is a special one (the
    [CLS] an encoder classifier reads, a decoder's BOS).
    """
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    ids: list[int] = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    if max_length is None or len(ids) <= max_length:
        return ids
    if ids[0] in tokenizer.all_special_ids:
        return [ids[0], *ids[len(ids) - max_length + 1 :]]
    return ids[-max_length:]


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as generate() uses: (B, T) -> (B, T)."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, with padding on either side: (B, T) -> (B,)."""
    T = attention_mask.shape[1]
    return (T - 1 - attention_mask.flip(1).argmax(1)).long()


def _unwrap(model: Any) -> Any:
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def scalar_head_outputs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A decoder sequence classifier's scalar head at every position: (B, T) -> (B, T) float32.

    The forward goes through `model` itself (its DDP / FSDP / peft wrappers included) and the
    head's per-position output is taken with a hook: the model's own pooling reads "the last token
    that is not pad", which is the token before EOS when pad == EOS.
    """
    head = getattr(_unwrap(model), "score", None)
    if head is None:
        raise ValueError("reward_path: a per-token value needs a decoder classifier with a `score` head")
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    try:
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from(attention_mask),
            use_cache=False,
        )
    finally:
        handle.remove()
    return captured[-1][..., 0].float()


def reward_normalization(model: Any) -> tuple[float, float]:
    """(offset, scale) stored in a trained reward model's config; (0, 1) when it has none."""
    config = _unwrap(model).config
    return float(getattr(config, "reward_offset", 0.0) or 0.0), float(getattr(config, "reward_scale", 1.0) or 1.0)


def reward_scores(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalize: bool = True
) -> torch.Tensor:
    """The reward of each sequence: (B, T) -> (B,) float32. The one place that decides where a
    reward model is read: a decoder at the last real token (the EOS when the response ended),
    an encoder by its own pooling ([CLS]). Normalised by the offset and scale stored with it."""
    if getattr(_unwrap(model), "score", None) is not None:
        per_position = scalar_head_outputs(model, input_ids, attention_mask)  # (B, T)
        index = last_token_index(attention_mask).unsqueeze(1)
        scores = per_position.gather(1, index).squeeze(1)
    else:
        scores = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    if normalize:
        offset, scale = reward_normalization(model)
        scores = (scores - offset) / scale
    return scores


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, P) ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def sft_batch(examples: list[tuple[list[int], int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels -100 on the prompt and the padding (loss on answers only)."""
    input_ids, attention_mask = right_pad([ids for ids, _ in examples], pad_token_id)
    labels = torch.where(attention_mask.bool(), input_ids, -100)
    for i, (_, prompt_len) in enumerate(examples):
        labels[i, :prompt_len] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


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
    return upcast_trainable(get_peft_model(model, lora))


HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(mixed_precision: str, dtype: str, device: torch.device, *, lora: bool = False) -> torch.dtype:
    """The dtype a trained model is loaded in.

    Under mixed precision the trained weights are float32 master weights, except a LoRA base: it is
    frozen, so it is held in the half type (the adapters and heads are float32, see upcast_trainable).
    Without mixed precision, the configured dtype.
    """
    if mixed_precision != "no":
        return HALF_DTYPES[mixed_precision] if lora else torch.float32
    return resolve_dtype(dtype, device)


def upcast_trainable(model: Any) -> Any:
    """Make every trainable parameter float32 (LoRA adapters, a saved head over a half-precision base)."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant checkpointing (works with frozen inputs, LoRA and DDP)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    model.config.use_cache = False


def load_policy(config: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Causal LM and its tokenizer, placed and typed as configured, with LoRA when lora_r > 0."""
    config.validate()
    device = resolve_device(config.device)
    model: Any = AutoModelForCausalLM.from_pretrained(
        config.model_name_or_path,
        dtype=weights_dtype(config.mixed_precision, config.dtype, device, lora=config.lora_r > 0),
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
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code, require_eos=False)
    model: Any = AutoModelForSequenceClassification.from_pretrained(
        config.model_name_or_path,
        num_labels=1,
        dtype=weights_dtype(config.mixed_precision, config.dtype, device, lora=lora and config.lora_r > 0),
        trust_remote_code=config.trust_remote_code,
    ).to(device)
    # The model's own pooling needs a pad id; rewards are read by reward_scores, not by it.
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
    finished: bool = True,
) -> str:
    """Prompt + response as the policy would have produced it, ending with EOS when it ended."""
    head = render_prompt(tokenizer, prompt, use_chat_template=use_chat_template)
    eos = (tokenizer.eos_token or "") if finished else ""
    return head + response + eos


def reward_input_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompt: PromptInput,
    response: str,
    *,
    max_length: int,
    use_chat_template: bool = True,
    finished: bool = True,
) -> list[int]:
    """What a reward model reads for one response, the same in training, scoring and PPO."""
    text = render_conversation(tokenizer, prompt, response, use_chat_template=use_chat_template, finished=finished)
    return encode_text(tokenizer, text, max_length=max_length)
