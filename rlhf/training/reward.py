"""Reward model: InstructGPT-style grouped, weighted Bradley-Terry training on trl's RewardTrainer.

The rows are comparisons derived from rankings. All C(K,2) pairs of one ranking (one group_id)
go into the same batch and every ranking carries the same total weight (InstructGPT section
3.5: shuffled pairs overfit after one pass). Ties are left out unless `include_ties`.
Training runs through `GroupedRewardTrainer`, a thin subclass of trl's `RewardTrainer` that swaps
in the group batch sampler and the weighted loss; everything else (Trainer loop, optimizer,
scheduler, collator, accelerate) is trl's and transformers'.
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
from trl.trainer.reward_trainer import DataCollatorForPreference

from rlhf.training.config import RewardModelConfig
from rlhf.training.losses import bradley_terry_loss, group_weights
from rlhf.training.models import load_reward_model, render_conversation, resolve_device
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


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, row: ComparisonRow, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt+chosen and prompt+rejected; longer ones keep their last tokens."""
    chosen = tokenizer(render_conversation(tokenizer, row.prompt, row.chosen), add_special_tokens=False)
    rejected = tokenizer(render_conversation(tokenizer, row.prompt, row.rejected), add_special_tokens=False)
    return chosen["input_ids"][-max_length:], rejected["input_ids"][-max_length:]


def training_table(
    rows: list[ComparisonRow], tokenizer: PreTrainedTokenizerBase, config: RewardModelConfig
) -> tuple[dict[str, list[Any]], list[str]]:
    """Columns for the trainer (chosen_ids, rejected_ids, weight, is_tie[, margin]) and group ids."""
    train = [r for r in rows if r.split == "train" and (config.include_ties or not r.is_tie)]
    if not train:
        raise ValueError("rows: no training comparisons (all are ties or in the val split)")
    group_ids = [r.group_id for r in train]
    raw = [r.weight for r in train]
    weights = group_weights(group_ids, raw) if config.equal_prompt_weight else raw
    table: dict[str, list[Any]] = {"chosen_ids": [], "rejected_ids": [], "weight": [], "is_tie": []}
    if config.use_margin:
        table["margin"] = []
    for row, weight in zip(train, weights, strict=True):
        chosen_ids, rejected_ids = tokenize_pair(tokenizer, row, config.max_length)
        table["chosen_ids"].append(chosen_ids)
        table["rejected_ids"].append(rejected_ids)
        table["weight"].append(float(weight))
        table["is_tie"].append(bool(row.is_tie))
        if config.use_margin:
            table["margin"].append(0.0 if row.is_tie else float(row.margin))
    return table, group_ids


def pack_groups(group_ids: list[str], max_pairs: int, *, seed: int) -> list[list[int]]:
    """Batches of row indices: whole groups, shuffled, packed greedily up to max_pairs.

    A group larger than max_pairs becomes a batch of its own: a ranking is never split.
    """
    members: dict[str, list[int]] = defaultdict(list)
    for index, gid in enumerate(group_ids):
        members[gid].append(index)
    groups = list(members.values())
    random.Random(seed).shuffle(groups)
    batches: list[list[int]] = []
    current: list[int] = []
    for group in groups:
        if current and len(current) + len(group) > max_pairs:
            batches.append(current)
            current = []
        current = current + group
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
class WeightedPreferenceCollator(DataCollatorForPreference):
    """trl's preference collator plus per-pair `weight` and `is_tie` tensors."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        output["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float)
        output["is_tie"] = torch.tensor([e["is_tie"] for e in examples], dtype=torch.bool)
        return output


# ----------------------------------------------------------------------------- trainer


class GroupedRewardTrainer(RewardTrainer):
    """trl's RewardTrainer with whole-ranking batches and the weighted (tie-aware) BT loss."""

    # compute_loss returns a per-batch mean; let Trainer divide by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, batches: list[list[int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_batch_sampler = GroupBatchSampler(batches, seed=self.args.seed)

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
        weight = inputs.pop("weight")  # (B,)
        is_tie = inputs.pop("is_tie")  # (B,)
        margin = inputs.pop("margin", None)  # (B,) or None
        inputs["use_cache"] = False
        outputs = model(**inputs)
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = bradley_terry_loss(rewards_chosen, rewards_rejected, margin=margin, weight=weight, is_tie=is_tie)
        center: float | None = getattr(self.args, "center_rewards_coefficient", None)
        if center:
            loss = loss + center * torch.mean((rewards_chosen + rewards_rejected) ** 2)
        with torch.no_grad():
            strict = ~is_tie
            if strict.any():
                accuracy = (rewards_chosen > rewards_rejected)[strict].float().mean()
                self._metrics[mode]["accuracy"].append(accuracy.item())
            self._metrics[mode]["margin"].append((rewards_chosen - rewards_rejected).mean().item())
            self._metrics[mode]["mean_reward"].append(outputs.logits.mean().item())
        return (loss, outputs) if return_outputs else loss


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
    """trl RewardConfig matching our config (CPU-friendly: no bf16, no gradient checkpointing)."""
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
        bf16=device.type == "cuda" and config.model.dtype == "bfloat16",
        gradient_checkpointing=False,
        use_cpu=device.type == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        max_length=None,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        disable_dropout=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        disable_tqdm=True,
    )


def build_reward_trainer(
    config: RewardModelConfig,
    rows: list[ComparisonRow],
    *,
    output_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> tuple[GroupedRewardTrainer, dict[str, list[Any]], list[str], list[list[int]]]:
    """The trainer with its tokenized table, per-row group ids and packed batches."""
    transformers.set_seed(config.seed)  # before loading: the fresh head is seeded
    device = resolve_device(config.model.device)
    model, tokenizer = load_reward_model(config.model)
    tokenizer.padding_side = "right"
    table, group_ids = training_table(rows, tokenizer, config)
    batches = pack_groups(group_ids, config.max_pairs_per_batch, seed=config.seed)
    trainer = GroupedRewardTrainer(
        model=model,
        args=trl_reward_args(config, output_dir / "trainer", device),
        data_collator=WeightedPreferenceCollator(pad_token_id=tokenizer.pad_token_id),
        train_dataset=Dataset.from_dict(table),
        processing_class=tokenizer,
        callbacks=callbacks,
        batches=batches,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through on_progress and logging
    return trainer, table, group_ids, batches


def train_reward_model(
    config: RewardModelConfig,
    rows: list[ComparisonRow],
    *,
    output_dir: str | Path,
    on_progress: ProgressCallback | None = None,
) -> RewardResult:
    """Train a reward model on the train split, evaluate on the val split, save to output_dir."""
    config.validate()
    validate_rows(rows)
    output_dir = Path(output_dir)
    callback = _ProgressCallback(on_progress)
    trainer, table, group_ids, batches = build_reward_trainer(config, rows, output_dir=output_dir, callbacks=[callback])
    tokenizer: Any = trainer.processing_class
    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    trained: Any = trainer.model
    if hasattr(trained, "merge_and_unload"):  # LoRA: save a plain model downstream code can load
        trained = trained.merge_and_unload()
    trained.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    pairs_seen = len(table["weight"]) * config.num_epochs
    metrics: dict[str, Any] = {
        "reward/train_pairs": len(table["weight"]),
        "reward/train_groups": len(set(group_ids)),
        "reward/train_batches": len(batches),
        "reward/train_loss": float(train_output.training_loss),
        "reward/loss_curve": callback.loss_curve,
        "reward/train_seconds": train_seconds,
        "reward/train_pairs_per_s": pairs_seen / max(train_seconds, 1e-9),
    }
    val = [r for r in rows if r.split == "val"]
    if val:
        metrics.update(
            evaluate_with_model(
                trained, tokenizer, val, batch_size=config.eval_batch_size, max_length=config.max_length
            )
        )
    if on_progress is not None:
        total = trainer.state.max_steps
        on_progress(total, total, {k: v for k, v in metrics.items() if k != "reward/loss_curve"})
    return RewardResult(model_path=str(output_dir), metrics=metrics, seed=config.seed)


@torch.no_grad()
def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
) -> list[float]:
    """Scalar reward of each full text (prompt + response), batched."""
    model.eval()
    device = next(model.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        ids = [
            tokenizer(t, add_special_tokens=False)["input_ids"][-max_length:] for t in texts[start : start + batch_size]
        ]
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            attention_mask[i, : len(x)] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits  # (B, 1)
        scores.extend(logits.squeeze(-1).float().tolist())
    return scores


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
