"""Turning the annotation data into the plain rows `rlhf.training` takes, with their snapshots."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from typing import Any

from annotation.models import Comparison, Project, Prompt, Response
from labelers.models import LabelerQuality
from rlhf.training.rows import ComparisonRow, PromptRow

HOLDOUT_BUCKETS = 10  # without val/test prompts, one prompt in ten (by a stable hash) is held out


def _held_out(prompt_id: int, split: str, has_val: bool) -> bool:
    if has_val:
        return split in ("val", "test")
    return int(hashlib.sha256(str(prompt_id).encode()).hexdigest(), 16) % HOLDOUT_BUCKETS == 0


def comparison_rows(
    *, project: Project, include_ties: bool = False, weight_by_reliability: bool = False, max_id: int | None = None
) -> tuple[list[ComparisonRow], dict[str, Any]]:
    """Every comparison of the project as ``ComparisonRow`` (chosen / rejected texts, group =
    ranking, held-out split), plus a snapshot that names exactly the data used."""
    comparisons = Comparison.objects.filter(response_set__project=project).order_by("id")
    if max_id is not None:
        comparisons = comparisons.filter(id__lte=max_id)
    data = list(
        comparisons.values_list(
            "id",
            "response_set_id",
            "response_a_id",
            "response_b_id",
            "outcome",
            "margin",
            "ranking_id",
            "labeler_id",
            "response_set__prompt_id",
        )
    )
    prompts = {
        p.pk: p
        for p in Prompt.objects.filter(project=project, id__in={row[8] for row in data}).only(
            "id", "text", "messages", "split", "tags"
        )
    }
    has_val = any(p.split in ("val", "test") for p in prompts.values())
    texts = dict(
        Response.objects.filter(id__in={r for row in data for r in (row[2], row[3])}).values_list("id", "text")
    )
    skills = dict(LabelerQuality.objects.filter(project=project).values_list("labeler_id", "reliability"))
    votes: dict[tuple[int, int, int], Counter[str]] = defaultdict(Counter)
    for row in data:
        votes[(row[1], row[2], row[3])][row[4]] += 1
    rows = []
    for _cid, set_id, a, b, outcome, margin, ranking_id, labeler_id, prompt_id in data:
        if outcome == "tie" and not include_ties:
            continue
        prompt = prompts[prompt_id]
        chosen, rejected = (b, a) if outcome == "b" else (a, b)
        pair_votes = votes[(set_id, a, b)]
        others = sum(pair_votes.values()) - 1
        agreement = (pair_votes[outcome] - 1) / others if others > 0 else None
        weight = 1.0
        skill = skills.get(labeler_id)
        if weight_by_reliability and skill is not None:
            weight = float(skill)
        rows.append(
            ComparisonRow(
                prompt=prompt.messages if prompt.messages else prompt.text,
                chosen=texts[chosen],
                rejected=texts[rejected],
                group_id=str(ranking_id),
                margin=float(margin),
                is_tie=outcome == "tie",
                weight=weight,
                tag=prompt.tags[0] if prompt.tags else None,
                split="val" if _held_out(prompt_id, prompt.split, has_val) else "train",
                human_agreement=agreement,
            )
        )
    ids = [row[0] for row in data]
    snapshot = {
        "comparisons": len(ids),
        "max_comparison_id": max(ids) if ids else 0,
        "comparison_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
        "train_rows": sum(1 for r in rows if r.split == "train"),
        "val_rows": sum(1 for r in rows if r.split == "val"),
        "include_ties": include_ties,
    }
    return rows, snapshot


def prompt_rows(*, prompts: list[Prompt]) -> list[PromptRow]:
    return [
        PromptRow(id=str(p.pk), text=p.text or None, messages=p.messages or None, tags=tuple(p.tags)) for p in prompts
    ]


def training_prompts(*, project: Project, held_out: bool = False, limit: int | None = None) -> list[Prompt]:
    """Prompts for PPO rollouts (train) or its evaluation (held out)."""
    prompts = list(
        Prompt.objects.filter(project=project).order_by("id").only("id", "text", "messages", "split", "tags")
    )
    has_val = any(p.split in ("val", "test") for p in prompts)
    chosen = [p for p in prompts if _held_out(p.pk, p.split, has_val) == held_out]
    return chosen[:limit] if limit else chosen
