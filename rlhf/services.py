"""Writes of the model registry."""

from __future__ import annotations

from django.db import transaction

from annotation.models import Project
from config.exceptions import ApplicationError, Conflict
from rlhf.models import ModelKind, ModelVersion


@transaction.atomic
def model_version_register(
    *, project: Project | None, kind: str, name: str, path: str, parent: ModelVersion | None = None, notes: str = ""
) -> ModelVersion:
    """Register a model that exists outside the platform (an SFT checkpoint, a hub id)."""
    if kind not in ModelKind.values:
        raise ApplicationError(f"kind: must be one of {', '.join(ModelKind.values)}.", code="invalid")
    if not name.strip():
        raise ApplicationError("name: must not be empty.", code="invalid")
    if not path.strip():
        raise ApplicationError("path: give a local directory or a hub id.", code="invalid")
    if ModelVersion.objects.filter(project=project, kind=kind, name=name).exists():
        raise Conflict(f"name: a {kind} model named '{name}' already exists in this project.", code="name_taken")
    return ModelVersion.objects.create(project=project, kind=kind, name=name, path=path, parent=parent, notes=notes)
