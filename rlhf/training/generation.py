"""K sampled responses per prompt, batched, seeded, with the exact settings recorded."""

from __future__ import annotations

import logging
from typing import Any

import torch
import transformers
from transformers import PreTrainedTokenizerBase

from rlhf.training.config import GenerationConfig
from rlhf.training.models import encode_text, eos_token_ids, left_pad, load_policy, render_prompt
from rlhf.training.rollout import HFGenerateEngine, SamplingSettings
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
    if k < 1:
        raise ValueError("k: must be >= 1")
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
    engine = HFGenerateEngine(
        SamplingSettings(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            stop_token_ids=tuple(eos_token_ids(model, tokenizer)),
            pad_token_id=int(tokenizer.pad_token_id),
        )
    )
    results: list[list[GeneratedResponse]] = []
    for start in range(0, len(prompts), config.batch_size):
        batch = prompts[start : start + config.batch_size]
        queries = [
            encode_text(
                tokenizer,
                render_prompt(tokenizer, row.content, use_chat_template=config.use_chat_template),
                max_length=config.max_prompt_length,
            )
            for row in batch
            for _ in range(k)
        ]
        query, query_mask = left_pad(queries, int(tokenizer.pad_token_id))
        rollout = engine.sample(model, query.to(device), query_mask.to(device))  # (B * k, N)
        lengths = rollout.mask.sum(1).long().tolist()
        finished = rollout.finished.tolist()
        texts = tokenizer.batch_decode(rollout.response, skip_special_tokens=True)
        for i in range(len(batch)):
            group = []
            for j in range(i * k, (i + 1) * k):
                # PostgreSQL text and jsonb cannot hold NUL; a byte-level tokenizer can sample it.
                text = str(texts[j]).replace("\x00", "").strip()
                group.append(
                    GeneratedResponse(
                        text=text, settings=dict(settings), num_tokens=lengths[j], finished=bool(finished[j])
                    )
                )
            results.append(group)
    return results
