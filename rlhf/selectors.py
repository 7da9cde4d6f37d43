"""Reads of the model registry and the runs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from annotation.models import Project
from config.exceptions import NotFound
from rlhf.models import ModelVersion, RunStatus, TrainingRun


def training_run_list(*, project: Project | None = None, kind: str | None = None) -> QuerySet[TrainingRun]:
    qs = TrainingRun.objects.select_related("output_version", "policy", "reward_model", "reference")
    if project is not None:
        qs = qs.filter(project=project)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("-created_at", "-id")


def training_run_get(*, run_id: int) -> TrainingRun:
    run = training_run_list().filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"Training run {run_id} not found.")
    return run


def training_run_eta_seconds(*, run: TrainingRun) -> float | None:
    """Remaining seconds at the rate so far, for a running run."""
    if run.status != RunStatus.RUNNING or not run.started_at or not run.progress_step or not run.progress_total:
        return None
    elapsed = (timezone.now() - run.started_at).total_seconds()
    return round(elapsed / run.progress_step * (run.progress_total - run.progress_step), 1)


def model_version_get(*, version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"Model version {version_id} not found.")
    return version


def model_version_lineage(*, version: ModelVersion) -> list[dict[str, Any]]:
    """The chain of parents up to the SFT model, newest first."""
    chain = []
    current: ModelVersion | None = version
    seen = set()
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        chain.append(
            {
                "id": current.pk,
                "name": current.name,
                "kind": current.kind,
                "state": current.state,
                "run_id": current.run_id,
            }
        )
        current = current.parent
    return chain


def model_versions_compare(*, a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """Side by side: each version's stored metrics and evaluation."""

    def view(v: ModelVersion) -> dict[str, Any]:
        return {"id": v.pk, "name": v.name, "kind": v.kind, "state": v.state, "metrics": v.metrics}

    return {"a": view(a), "b": view(b)}
