"""Turning the annotation data into the plain rows `rlhf.training` takes, with their snapshots."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from annotation.models import Project, Prompt, Response
from annotation.selectors import preference_comparisons
from quality.models import LabelerQuality
from rlhf.models import LoopSettings
from rlhf.sources import server_path_problem
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
    comparisons = preference_comparisons(project=project).order_by("id")
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


def evaluation_prompts(*, project: Project, limit: int) -> list[Prompt]:
    """Prompts a human evaluation asks the two policies: the project's ``test`` split, else its
    held-out prompts (those reward runs keep for validation), at most ``limit``, oldest first."""
    test = list(Prompt.objects.filter(project=project, split="test").order_by("id")[:limit])
    return test or training_prompts(project=project, held_out=True, limit=limit)


SFT_ROW_SHAPES = '{"prompt", "completion"}, {"prompt", "response"} or {"messages": [...]}'


def sft_rows_from_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of an SFT JSONL file as {"prompt": text | messages, "response": text}; a
    ValueError names the line that is wrong (or says the file is missing or empty)."""
    problem = server_path_problem(path, what="SFT data files")
    if problem is not None:
        raise ValueError(problem)
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"no file at '{path}'")
    rows = []
    with file.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: not valid JSON ({exc.msg})") from None
            rows.append(_sft_row(item, number))
    if not rows:
        raise ValueError(f"'{path}' has no rows; each line is one of {SFT_ROW_SHAPES}")
    return rows


def _sft_row(item: Any, number: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"line {number}: expected a JSON object, one of {SFT_ROW_SHAPES}")
    if "messages" in item:
        messages = item["messages"]
        well_formed = isinstance(messages, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
        if not well_formed or len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ValueError(
                f'line {number}: messages must be a list of {{"role", "content"}} objects, a prompt turn '
                "and then the assistant's answer last"
            )
        if not messages[-1]["content"].strip():
            raise ValueError(f"line {number}: the assistant's answer is empty")
        prompt: Any = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        return {"prompt": prompt, "response": messages[-1]["content"]}
    answer_key = "completion" if "completion" in item else "response"
    prompt, response = item.get("prompt"), item.get(answer_key)
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise ValueError(f"line {number}: expected {SFT_ROW_SHAPES}, with text values")
    if not prompt.strip() or not response.strip():
        raise ValueError(f"line {number}: {'prompt' if not prompt.strip() else answer_key} is empty")
    return {"prompt": prompt, "response": response}


def sft_rows_for(*, project: Project) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The project's SFT rows for PPO-ptx, {"prompt", "response"} each, and a snapshot naming them.
    Today one source: the loop setting sft_data_path (empty: no rows)."""
    loop = LoopSettings.objects.filter(project=project).first()
    path = loop.sft_data_path if loop is not None else ""
    if not path:
        return [], {"sft_rows": 0}
    try:
        rows = sft_rows_from_jsonl(path)
    except ValueError as exc:
        raise ValueError(f"sft_data_path: {exc}") from None
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return rows, {"sft_data_path": path, "sft_rows": len(rows), "sft_rows_sha256": digest}
