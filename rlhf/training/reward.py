"""Reward model: InstructGPT-style grouped, weighted Bradley-Terry training on trl's RewardTrainer.

The rows are comparisons derived from rankings. All C(K,2) pairs of one ranking (one group_id)
go into the same batch, every ranking carries the same total weight (InstructGPT section 3.5:
shuffled pairs overfit after one pass), and each of its K responses is forwarded once: the pairs
are formed from the K rewards. Ties are left out unless `include_ties`.
Training runs through `GroupedRewardTrainer`, a thin subclass of trl's `RewardTrainer` that swaps
in the ranking batches and the weighted loss; everything else (Trainer loop, optimizer,
scheduler, mixed precision, accelerate and its DDP / DeepSpeed / FSDP) is trl's and transformers'.
Rewards are read by `models.reward_scores` (the same reading in training, scoring and PPO) and
normalised after training so that the training responses score mean 0 and std 1.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import RewardConfig, RewardTrainer

from rlhf.training.config import RewardModelConfig
from rlhf.training.losses import bradley_terry_loss, group_weights
from rlhf.training.models import (
    encode_text,
    load_reward_model,
    render_conversation,
    resolve_device,
    reward_input_ids,
    reward_scores,
    right_pad,
)
from rlhf.training.rows import ComparisonRow, ProgressCallback, RewardResult

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


def validate_rows(rows: list[ComparisonRow]) -> None:
    """Raise ValueError("rows...: ...") on empty data or a malformed row."""
    if not rows:
        raise ValueError("rows: must not be empty")
    for i, row in enumerate(rows):
        if not isinstance(row.chosen, str) or not isinstance(row.rejected, str):
            raise ValueError(f"rows[{i}].chosen: chosen and rejected must be strings (an empty response is allowed)")
        if not row.group_id:
            raise ValueError(f"rows[{i}].group_id: must not be empty")
        if row.weight < 0:
            raise ValueError(f"rows[{i}].weight: must be >= 0")
        if row.split not in ("train", "val"):
            raise ValueError(f"rows[{i}].split: must be 'train' or 'val', got {row.split!r}")


def training_groups(
    rows: list[ComparisonRow], tokenizer: PreTrainedTokenizerBase, config: RewardModelConfig
) -> tuple[list[dict[str, Any]], list[str]]:
    """One training example per ranking: its distinct responses tokenized once, and its pairs as
    indices into them (with weight, tie flag and margin). Returns (groups, per-pair group ids).

    A ranking of K responses is K forwards, not the 2 * C(K, 2) of a pair-per-row table
    (InstructGPT section 3.5); the loss and the weights per ranking are the same.
    """
    train = [r for r in rows if r.split == "train" and (config.include_ties or not r.is_tie)]
    if not train:
        raise ValueError("rows: no training comparisons (all are ties or in the val split)")
    group_ids = [r.group_id for r in train]
    raw = [r.weight for r in train]
    weights = group_weights(group_ids, raw) if config.equal_prompt_weight else raw
    groups: dict[str, dict[str, Any]] = {}
    index_of: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for row, weight in zip(train, weights, strict=True):
        group = groups.setdefault(
            row.group_id,
            {"input_ids": [], "chosen_index": [], "rejected_index": [], "weight": [], "is_tie": [], "margin": []},
        )
        seen = index_of[row.group_id]
        prompt_key = repr(row.prompt)
        pair = []
        for text in (row.chosen, row.rejected):
            key = (prompt_key, text)
            if key not in seen:
                seen[key] = len(group["input_ids"])
                group["input_ids"].append(reward_input_ids(tokenizer, row.prompt, text, max_length=config.max_length))
            pair.append(seen[key])
        group["chosen_index"].append(pair[0])
        group["rejected_index"].append(pair[1])
        group["weight"].append(float(weight))
        group["is_tie"].append(bool(row.is_tie))
        group["margin"].append(0.0 if row.is_tie or not config.use_margin else float(row.margin))
    return list(groups.values()), group_ids


def pack_groups(pairs_per_group: list[int], max_pairs: int, *, seed: int) -> list[list[int]]:
    """Batches of group indices: groups shuffled, packed greedily up to max_pairs pairs.

    A group larger than max_pairs becomes a batch of its own: a ranking is never split.
    """
    order = list(range(len(pairs_per_group)))
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    current: list[int] = []
    size = 0
    for group in order:
        n = pairs_per_group[group]
        if current and size + n > max_pairs:
            batches.append(current)
            current, size = [], 0
        current.append(group)
        size += n
    if current:
        batches.append(current)
    return batches


class GroupBatchSampler(Sampler[list[int]]):
    """Yields the packed group batches, in a fresh seeded order on every pass."""

    def __init__(self, batches: list[list[int]], *, seed: int) -> None:
        self.batches = batches
        self.seed = seed
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        random.Random(self.seed + self.epoch).shuffle(order)
        self.epoch += 1
        for i in order:
            yield self.batches[i]

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class RankingCollator:
    """Whole rankings -> one right-padded batch of their distinct responses plus pair indices.

    Output: input_ids / attention_mask (N, T) for the N responses; chosen_index, rejected_index,
    weight, is_tie, margin (P,) for the P pairs, indexing into the N responses.
    """

    pad_token_id: int

    def __call__(self, groups: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[list[int]] = []
        out: dict[str, list[Any]] = {"chosen_index": [], "rejected_index": [], "weight": [], "is_tie": [], "margin": []}
        for group in groups:
            base = len(sequences)
            sequences.extend(group["input_ids"])
            out["chosen_index"].extend(base + i for i in group["chosen_index"])
            out["rejected_index"].extend(base + i for i in group["rejected_index"])
            for key in ("weight", "is_tie", "margin"):
                out[key].extend(group[key])
        input_ids, attention_mask = right_pad(sequences, self.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "chosen_index": torch.tensor(out["chosen_index"], dtype=torch.long),
            "rejected_index": torch.tensor(out["rejected_index"], dtype=torch.long),
            "weight": torch.tensor(out["weight"], dtype=torch.float),
            "is_tie": torch.tensor(out["is_tie"], dtype=torch.bool),
            "margin": torch.tensor(out["margin"], dtype=torch.float),
        }


# ----------------------------------------------------------------------------- trainer


class GroupedRewardTrainer(RewardTrainer):
    """trl's RewardTrainer with whole-ranking batches, each response forwarded once, and the
    weighted (tie-aware) Bradley-Terry loss over all pairs of each ranking."""

    # compute_loss returns a per-batch mean; let Trainer divide by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, batches: list[list[int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_batch_sampler = GroupBatchSampler(batches, seed=self.args.seed)
        self.forwards = 0  # sequences forwarded in training (K per ranking)

    def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
        return dataset  # already tokenized by training_groups, one row per ranking

    def get_train_dataloader(self) -> DataLoader:
        """Whole groups per batch; accelerate shards whole batches across processes."""
        loader = DataLoader(
            self.train_dataset,  # type: ignore[arg-type]
            batch_sampler=self.group_batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        mode = "train" if model.training else "eval"
        rewards = reward_scores(model, inputs["input_ids"], inputs["attention_mask"], normalize=False)  # (N,)
        if model.training:
            self.forwards += int(inputs["input_ids"].shape[0])
        rewards_chosen = rewards[inputs["chosen_index"]]  # (P,)
        rewards_rejected = rewards[inputs["rejected_index"]]  # (P,)
        is_tie = inputs["is_tie"]
        margin = inputs["margin"] if bool(inputs["margin"].any()) else None
        loss = bradley_terry_loss(
            rewards_chosen, rewards_rejected, margin=margin, weight=inputs["weight"], is_tie=is_tie
        )
        center: float | None = getattr(self.args, "center_rewards_coefficient", None)
        if center:
            loss = loss + center * torch.mean(rewards**2)
        with torch.no_grad():
            strict = ~is_tie
            if strict.any():
                accuracy = (rewards_chosen > rewards_rejected)[strict].float().mean()
                self._metrics[mode]["accuracy"].append(accuracy.item())
            self._metrics[mode]["margin"].append((rewards_chosen - rewards_rejected).mean().item())
            self._metrics[mode]["mean_reward"].append(rewards.mean().item())
        return (loss, rewards) if return_outputs else loss


class _ProgressCallback(TrainerCallback):
    """Turns Trainer logs into on_progress(step, total, {"reward/...": ...}) and a loss curve."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.loss_curve: list[tuple[int, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.loss_curve.append((state.global_step, float(logs["loss"])))
        metrics = {"reward/loss": float(logs["loss"])}
        for key in ("accuracy", "margin", "mean_reward", "learning_rate", "grad_norm"):
            if key in logs:
                metrics[f"reward/train_{key}"] = float(logs[key])
        if self.on_progress is not None:
            self.on_progress(state.global_step, state.max_steps, metrics)


# ----------------------------------------------------------------------------- public API


def trl_reward_args(config: RewardModelConfig, output_dir: str | Path, device: torch.device) -> RewardConfig:
    """trl RewardConfig matching our config: mixed precision as configured (float32 master weights),
    non-reentrant gradient checkpointing when asked."""
    precision = config.model.mixed_precision
    return RewardConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.max_pairs_per_batch,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to="none",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=config.model.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.model.gradient_checkpointing else None,
        use_cpu=device.type == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        max_length=None,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        disable_dropout=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
    )


def build_reward_trainer(
    config: RewardModelConfig,
    rows: list[ComparisonRow],
    *,
    output_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[GroupedRewardTrainer, list[dict[str, Any]], list[str], list[list[int]]]:
    """The trainer with its tokenized rankings, per-pair group ids and packed batches."""
    transformers.set_seed(config.seed)  # before loading: the fresh head is seeded
    device = resolve_device(config.model.device)
    model, tokenizer = load_reward_model(config.model)
    # A model trained before carries the previous normalisation; this one learns raw rewards.
    model.config.reward_offset, model.config.reward_scale = 0.0, 1.0
    tokenizer.padding_side = "right"
    groups, group_ids = training_groups(rows, tokenizer, config)
    batches = pack_groups([len(g["weight"]) for g in groups], config.max_pairs_per_batch, seed=config.seed)
    columns = {key: [g[key] for g in groups] for key in groups[0]}
    trainer = GroupedRewardTrainer(
        model=model,
        args=trl_reward_args(config, output_dir / "trainer", device),
        data_collator=RankingCollator(pad_token_id=tokenizer.pad_token_id),
        train_dataset=Dataset.from_dict(columns),
        processing_class=tokenizer,
        callbacks=callbacks,
        batches=batches,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress and logging
    return trainer, groups, group_ids, batches


def fit_normalization(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[ComparisonRow], *, config: RewardModelConfig
) -> tuple[float, float]:
    """(offset, scale): mean and standard deviation of the raw reward over the distinct responses
    of the rows (samples of the policies that wrote them: the SFT policy in the first round)."""
    seen: set[tuple[str, str]] = set()
    sequences: list[list[int]] = []
    for row in rows:
        for text in (row.chosen, row.rejected):
            key = (repr(row.prompt), text)
            if key not in seen:
                seen.add(key)
                sequences.append(reward_input_ids(tokenizer, row.prompt, text, max_length=config.max_length))
    raw = torch.tensor(_score_ids(model, tokenizer, sequences, batch_size=config.eval_batch_size, normalize=False))
    scale = float(raw.std()) if raw.numel() > 1 else 1.0
    return float(raw.mean()), scale if scale > 1e-6 else 1.0


def train_reward_model(
    config: RewardModelConfig,
    rows: list[ComparisonRow],
    *,
    output_dir: str | Path,
    on_progress: ProgressCallback | None = None,
) -> RewardResult:
    """Train a reward model on the train split, normalise it, evaluate on the val split, save it."""
    config.validate()
    validate_rows(rows)
    output_dir = Path(output_dir)
    callback = _ProgressCallback(on_progress)
    trainer, groups, group_ids, batches = build_reward_trainer(
        config, rows, output_dir=output_dir, callbacks=[callback]
    )
    tokenizer: Any = trainer.processing_class
    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    trained: Any = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(trained, "merge_and_unload"):  # LoRA: save a plain model downstream code can load
        trained = trained.merge_and_unload()
    offset, scale = 0.0, 1.0
    if config.normalize_rewards:
        offset, scale = fit_normalization(trained, tokenizer, [r for r in rows if r.split == "train"], config=config)
    trained.config.reward_offset, trained.config.reward_scale = offset, scale
    if trainer.accelerator.is_main_process:
        trained.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()

    n_pairs = len(group_ids)
    metrics: dict[str, Any] = {
        "reward/train_pairs": n_pairs,
        "reward/train_groups": len(groups),
        "reward/train_batches": len(batches),
        "reward/train_loss": float(train_output.training_loss),
        "reward/loss_curve": callback.loss_curve,
        "reward/train_seconds": train_seconds,
        "reward/train_pairs_per_s": n_pairs * config.num_epochs / max(train_seconds, 1e-9),
        "reward/forwards": trainer.forwards,
        "reward/offset": offset,
        "reward/scale": scale,
    }
    val = [r for r in rows if r.split == "val"]
    if val:
        metrics.update(
            evaluate_with_model(
                trained, tokenizer, val, batch_size=config.eval_batch_size, max_length=config.max_length
            )
        )
    if on_progress is not None and trainer.accelerator.is_main_process:
        total = trainer.state.max_steps
        on_progress(total, total, {k: v for k, v in metrics.items() if k != "reward/loss_curve"})
    return RewardResult(model_path=str(output_dir), metrics=metrics, seed=config.seed)


@torch.no_grad()
def _score_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: list[list[int]],
    *,
    batch_size: int,
    normalize: bool = True,
) -> list[float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = right_pad(sequences[start : start + batch_size], tokenizer.pad_token_id)
        scores.extend(
            reward_scores(model, input_ids.to(device), attention_mask.to(device), normalize=normalize).tolist()
        )
    model.train(was_training)
    return scores


def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> list[float]:
    """Normalised reward of each full text (prompt + response, as render_conversation writes it)."""
    sequences = [encode_text(tokenizer, t, max_length=max_length) for t in texts]
    return _score_ids(model, tokenizer, sequences, batch_size=batch_size)


def evaluate_with_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[ComparisonRow],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> dict[str, Any]:
    """Held-out metrics: accuracy overall and per tag, mean margin, human agreement when given."""
    strict = [r for r in rows if not r.is_tie]
    if not strict:
        raise ValueError("rows: no non-tie comparisons to evaluate")
    chosen = score_texts(
        model,
        tokenizer,
        [render_conversation(tokenizer, r.prompt, r.chosen) for r in strict],
        batch_size=batch_size,
        max_length=max_length,
    )
    rejected = score_texts(
        model,
        tokenizer,
        [render_conversation(tokenizer, r.prompt, r.rejected) for r in strict],
        batch_size=batch_size,
        max_length=max_length,
    )
    correct = [c > r for c, r in zip(chosen, rejected, strict=True)]
    by_tag: dict[str, list[bool]] = defaultdict(list)
    for row, ok in zip(strict, correct, strict=True):
        by_tag[row.tag or "untagged"].append(ok)
    metrics: dict[str, Any] = {
        "reward/accuracy": sum(correct) / len(correct),
        "reward/accuracy_by_tag": {tag: sum(v) / len(v) for tag, v in sorted(by_tag.items())},
        "reward/mean_margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(strict),
        "reward/eval_pairs": len(strict),
        "reward/correct": correct,  # per pair, in the order of the non-tie rows: the paired gate test
    }
    agreements = [r.human_agreement for r in strict if r.human_agreement is not None]
    if agreements:
        metrics["reward/human_agreement"] = sum(agreements) / len(agreements)
    return metrics


def evaluate_reward_model(
    model_path: str | Path,
    rows: list[ComparisonRow],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    device: str = "auto",
) -> dict[str, Any]:
    """Load a saved reward model and evaluate it on `rows` (ties are skipped)."""
    from rlhf.training.config import ModelConfig

    validate_rows(rows)
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=str(model_path), device=device))
    return evaluate_with_model(model, tokenizer, rows, batch_size=batch_size, max_length=max_length)
