"""K sampled responses per prompt, batched, seeded, with the exact settings recorded."""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from transformers import PreTrainedTokenizerBase

from rlhf.training.config import GenerationConfig
from rlhf.training.models import load_policy, render_prompt
from rlhf.training.rows import GeneratedResponse, PromptRow

logger = logging.getLogger(__name__)


def validate_prompts(prompts: list[PromptRow], *, field: str = "prompts") -> None:
    """Raise ValueError naming `field` when there are no prompts or one is empty."""
    if not prompts:
        raise ValueError(f"{field}: must not be empty")
    for row in prompts:
        content = row.content
        if (isinstance(content, str) and not content.strip()) or (isinstance(content, list) and not content):
            raise ValueError(f"{field}: prompt {row.id!r} has neither text nor messages")


def generate_responses(config: GenerationConfig, prompts: list[PromptRow], *, k: int) -> list[list[GeneratedResponse]]:
    """Sample k responses for each prompt with the configured policy; one list per prompt."""
    config.validate()
    if k < 2:
        raise ValueError("k: must be >= 2 (a ranking needs at least two responses)")
    validate_prompts(prompts)
    model, tokenizer = load_policy(config.model)
    return generate_with_model(model, tokenizer, config, prompts, k=k)


@torch.no_grad()
def generate_with_model(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    config: GenerationConfig,
    prompts: list[PromptRow],
    *,
    k: int,
) -> list[list[GeneratedResponse]]:
    """Like generate_responses, with an already loaded model and tokenizer."""
    transformers.set_seed(config.seed)
    model.eval()
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    settings: dict[str, Any] = {
        "model": config.model.model_name_or_path,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "top_k": config.top_k,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "k": k,
        "do_sample": True,
        "chat_template": bool(config.use_chat_template and tokenizer.chat_template),
        "dtype": config.model.dtype,
        "transformers": transformers.__version__,
    }
    results: list[list[GeneratedResponse]] = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        texts = [render_prompt(tokenizer, row.content, use_chat_template=config.use_chat_template) for row in batch]
        enc = tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=config.max_prompt_length,
            add_special_tokens=False,
        ).to(device)
        prompt_len = enc["input_ids"].shape[1]
        sequences = model.generate(
            **enc,
            do_sample=True,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k or None,
            max_new_tokens=config.max_new_tokens,
            num_return_sequences=k,
            eos_token_id=eos_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # (B * k, P + N)
        responses = sequences[:, prompt_len:].tolist()
        for i, _row in enumerate(batch):
            group = []
            for j in range(k):
                tokens = responses[i * k + j]
                finished = eos_id in tokens
                length = tokens.index(eos_id) + 1 if finished else len(tokens)
                while not finished and length and tokens[length - 1] == tokenizer.pad_token_id:
                    length -= 1
                # PostgreSQL text and jsonb cannot hold NUL; a byte-level tokenizer can sample it.
                text = str(tokenizer.decode(tokens[:length], skip_special_tokens=True)).replace("\x00", "").strip()
                group.append(
                    GeneratedResponse(text=text, settings=dict(settings), num_tokens=length, finished=finished)
                )
            results.append(group)
    return results
