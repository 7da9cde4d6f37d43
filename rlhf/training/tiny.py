"""Tiny models and a tokenizer built fully offline, for tests, benchmarks and the demo.

The tokenizer is a byte-level BPE trained on the bundled instruction corpus; the models are
small GPT-2s. `train_demo_sft` makes a demo SFT policy whose answers look like answers.

CLI: python -m rlhf.training.tiny OUTPUT_DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from rlhf.training.models import sft_batch

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).parent / "data"
CORPUS_PATH = DATA_DIR / "instructions.jsonl"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, "<|system|>", "<|user|>", "<|assistant|>"]
# The assistant turn ends with EOS and nothing after it, so that a sequence scored by the reward
# model ends exactly where a policy's sampled response does.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + '<|endoftext|>' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def load_corpus(path: Path = CORPUS_PATH) -> list[dict[str, str]]:
    """The bundled instruction/answer pairs: dicts with instruction, answer, tag."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def build_tiny_tokenizer(vocab_size: int = 512, *, extra_texts: list[str] | None = None) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the bundled corpus (deterministic), with a chat template."""
    texts = [f"{r['instruction']}\n{r['answer']}" for r in load_corpus()]
    texts += extra_texts or []
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_gpt2_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    n_positions: int = 256,
) -> GPT2Config:
    """GPT-2 config sized for CPU tests, with the tokenizer's special token ids."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def build_tiny_policy(
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    **size: Any,
) -> str:
    """Save a randomly initialised tiny GPT-2 causal LM and its tokenizer; return the path."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_gpt2_config(tokenizer, **size))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def build_tiny_reward_model(
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerFast | None = None,
    seed: int = 0,
    **size: Any,
) -> str:
    """Save a randomly initialised tiny GPT-2 scalar reward model and its tokenizer."""
    tokenizer = tokenizer or build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = tiny_gpt2_config(tokenizer, **size)
    config.num_labels = 1
    model = GPT2ForSequenceClassification(config)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return str(output_dir)


def _sft_examples(tokenizer: PreTrainedTokenizerFast, rows: list[dict[str, str]]) -> list[tuple[list[int], int]]:
    """(input_ids, prompt_length) for each row, prompt rendered with the chat template."""
    out = []
    for row in rows:
        messages = [{"role": "user", "content": row["instruction"]}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(str(prompt))["input_ids"]
        answer_ids = tokenizer(row["answer"] + EOS_TOKEN)["input_ids"]
        out.append((prompt_ids + answer_ids, len(prompt_ids)))
    return out


def train_demo_sft(
    output_dir: str | Path,
    *,
    quick: bool = False,
    epochs: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Train a tiny policy on the bundled instruction corpus; save it with its tokenizer.

    quick: a 2-layer 64-wide model for a few epochs (seconds, for tests); otherwise a 4-layer
    128-wide model trained for a few CPU minutes whose answers look like answers.
    Returns {"model_path", "loss", "seconds", "steps"}.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    if quick:
        size = {"n_embd": 64, "n_layer": 2, "n_head": 2}
        epochs = epochs or 3
        lr = learning_rate or 3e-3
    else:
        size = {"n_embd": 128, "n_layer": 4, "n_head": 4}
        epochs = epochs or 40
        lr = learning_rate or 2e-3
    model = GPT2LMHeadModel(tiny_gpt2_config(tokenizer, **size))
    examples = _sft_examples(tokenizer, load_corpus())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total_steps = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps, pct_start=0.1)
    start = time.perf_counter()
    loss_value = float("nan")
    model.train()
    for epoch in range(epochs):
        order = list(range(len(examples)))
        random.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = sft_batch([examples[j] for j in order[i : i + batch_size]], tokenizer.pad_token_id)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_value = loss.item()
        logger.info("demo sft epoch %d loss %.3f", epoch, loss_value)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return {
        "model_path": str(output_dir),
        "loss": loss_value,
        "seconds": time.perf_counter() - start,
        "steps": total_steps,
    }


def demo_sft_rows(limit: int | None = None) -> list[dict[str, Any]]:
    """The corpus as SFT rows for PPO-ptx: {"prompt": str, "response": str}."""
    rows = [{"prompt": r["instruction"], "response": r["answer"]} for r in load_corpus()]
    return rows[:limit] if limit is not None else rows


def main() -> None:  # pragma: no cover - CLI
    parser = argparse.ArgumentParser(description="Train the tiny demo SFT policy offline.")
    parser.add_argument("output_dir")
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    result = train_demo_sft(args.output_dir, quick=args.quick)
    print(json.dumps(result))


if __name__ == "__main__":  # pragma: no cover
    main()
