"""Shared tiny, offline fixtures for the training-core tests (no database needed)."""

from __future__ import annotations

import itertools
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ["river", "garden", "music", "window", "planet", "pencil", "cloud", "bridge"]


def make_comparisons(n_groups: int, *, k: int = 4, seed: int = 0, split: str = "train") -> list:
    """Rankings of k random responses where more 'good' words rank higher (the known rule)."""
    from rlhf.training.rows import ComparisonRow

    rng = random.Random(seed)
    rows = []
    for g in range(n_groups):
        prompt = f"Say something about the {rng.choice(WORDS)}."
        counts = rng.sample(range(5), k)  # distinct counts: no ties
        responses = []
        for n_good in counts:
            words = [rng.choice(WORDS) for _ in range(4)] + ["good"] * n_good
            rng.shuffle(words)
            responses.append((n_good, " ".join(words)))
        for (a, ta), (b, tb) in itertools.combinations(responses, 2):
            chosen, rejected = (ta, tb) if a > b else (tb, ta)
            rows.append(
                ComparisonRow(
                    prompt=prompt,
                    chosen=chosen,
                    rejected=rejected,
                    group_id=f"{split}-{seed}-{g}",
                    tag="even" if g % 2 else "odd",
                    split=split,  # type: ignore[arg-type]
                    human_agreement=0.75,
                )
            )
    return rows


@pytest.fixture(scope="session")
def tokenizer():
    from rlhf.training.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def sft_policy(tmp_path_factory) -> str:
    """A quickly trained tiny SFT policy (seconds): its answers use the corpus' words."""
    from rlhf.training.tiny import train_demo_sft

    path = tmp_path_factory.mktemp("sft")
    return train_demo_sft(path, quick=True)["model_path"]


@pytest.fixture(scope="session")
def random_policy(tmp_path_factory, tokenizer) -> str:
    from rlhf.training.tiny import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("policy"), tokenizer=tokenizer)
