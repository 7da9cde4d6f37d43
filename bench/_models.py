"""Models built from a config for the training benchmarks (random weights, no download)."""

from __future__ import annotations

from pathlib import Path

# Llama-style shapes. "100m" is 88M parameters (untied embeddings over an 8,192-row vocabulary);
# "1b" is Llama-3.2-1B's shape (1.24B parameters with its 128,256-row vocabulary, tied).
LLAMA_SIZES: dict[str, dict[str, int | bool]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512, "tie_word_embeddings": False},
    "100m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
             "intermediate_size": 2048, "vocab_size": 8192, "tie_word_embeddings": False},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True},
}  # fmt: skip


def build_llama(path: Path, size: str, *, dtype: str = "float32") -> int:
    """Save a randomly initialised Llama-style causal LM of `size` and the bundled tokenizer
    (its ids are a prefix of the model's vocabulary) to `path`; return the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.training.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    shape = dict(LLAMA_SIZES[size])
    shape["vocab_size"] = max(int(shape["vocab_size"]), len(tokenizer))
    config = LlamaConfig(
        **shape,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())
