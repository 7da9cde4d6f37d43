"""Tiny offline models, the demo SFT policy and K-sample generation."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf.training.config import GenerationConfig, ModelConfig
from rlhf.training.generation import generate_responses
from rlhf.training.rows import PromptRow
from rlhf.training.tiny import build_tiny_policy, build_tiny_tokenizer, load_corpus, train_demo_sft


def test_tokenizer_round_trips_and_has_a_chat_template(tokenizer):
    text = "What is the capital of Peru?"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<|user|>\nHi\n<|assistant|>\n"
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    # Deterministic: the same corpus gives the same vocabulary.
    assert build_tiny_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_bundled_corpus_has_a_few_hundred_pairs():
    rows = load_corpus()
    assert len(rows) >= 250
    assert all(r["instruction"] and r["answer"] for r in rows)


def test_quick_demo_sft_learns(tmp_path, tokenizer):
    from rlhf.training.tiny import _sft_examples, sft_batch

    result = train_demo_sft(tmp_path, quick=True, epochs=1)
    trained = GPT2LMHeadModel.from_pretrained(tmp_path)
    fresh = GPT2LMHeadModel.from_pretrained(build_tiny_policy(tmp_path / "fresh"))
    batch = sft_batch(_sft_examples(tokenizer, load_corpus()[:32]), tokenizer.pad_token_id)
    with torch.no_grad():
        assert trained(**batch).loss.item() < fresh(**batch).loss.item() - 0.5
    assert result["steps"] == 17


def _config(path: str, **kwargs) -> GenerationConfig:
    return GenerationConfig(model=ModelConfig(model_name_or_path=path, device="cpu"), max_new_tokens=12, **kwargs)


PROMPTS = [
    PromptRow(id="p1", text="What is 2 plus 3?"),
    PromptRow(id="p2", messages=[{"role": "user", "content": "What color is snow?"}]),
    PromptRow(id="p3", text="How can I sleep better?"),
]


def test_generate_k_samples_with_settings_and_seed(sft_policy):
    config = _config(sft_policy, temperature=0.8, top_p=0.9, seed=7, batch_size=2)
    out = generate_responses(config, PROMPTS, k=3)
    assert [len(group) for group in out] == [3, 3, 3]
    first = out[0][0]
    assert first.settings["model"] == sft_policy
    assert {k: first.settings[k] for k in ("temperature", "top_p", "max_new_tokens", "seed", "k")} == {
        "temperature": 0.8,
        "top_p": 0.9,
        "max_new_tokens": 12,
        "seed": 7,
        "k": 3,
    }
    for group in out:
        for r in group:
            assert 1 <= r.num_tokens <= 12
            assert r.finished == (r.num_tokens < 12 or r.finished)
            assert "<|" not in r.text
    # Same seed, same responses; another seed, other responses.
    again = generate_responses(config, PROMPTS, k=3)
    assert [[r.text for r in g] for g in again] == [[r.text for r in g] for g in out]
    other = generate_responses(_config(sft_policy, temperature=0.8, top_p=0.9, seed=8), PROMPTS, k=3)
    assert [[r.text for r in g] for g in other] != [[r.text for r in g] for g in out]


def test_generation_stops_on_eos(sft_policy):
    out = generate_responses(_config(sft_policy, temperature=0.3), PROMPTS, k=2)
    finished = [r for g in out for r in g if r.finished]
    assert finished, "a low-temperature SFT policy ends some answers with EOS"
    assert all(r.num_tokens <= 12 for r in finished)


def test_generation_bad_input_names_the_field(sft_policy, tmp_path):
    with pytest.raises(ValueError, match=r"^k: must be >= 1$"):
        generate_responses(_config(sft_policy), PROMPTS, k=0)
    with pytest.raises(ValueError, match=r"^prompts: must not be empty$"):
        generate_responses(_config(sft_policy), [], k=2)
    with pytest.raises(ValueError, match=r"^max_new_tokens: must be > 0$"):
        generate_responses(
            GenerationConfig(model=ModelConfig(model_name_or_path=sft_policy), max_new_tokens=0),
            PROMPTS,
            k=2,
        )
    # A model whose embedding is smaller than the tokenizer: mismatched tokenizer.
    small = build_tiny_tokenizer(vocab_size=300)
    path = build_tiny_policy(tmp_path / "small", tokenizer=small)
    build_tiny_tokenizer(vocab_size=600).save_pretrained(path)
    with pytest.raises(ValueError, match=r"^model_name_or_path: tokenizer has .*mismatched tokenizer"):
        generate_responses(_config(path), PROMPTS, k=2)
