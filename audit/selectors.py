"""Reading the audit trail: for one thing decided about, or for a project."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import QuerySet

from audit.models import AuditEntry
from audit.services import target_key


def audit_entries_for(*, target: models.Model, limit: int = 20) -> QuerySet[AuditEntry]:
    """The latest decisions about ``target``, newest first."""
    return AuditEntry.objects.filter(target=target_key(target)).select_related("actor")[:limit]


def audit_entries_for_project(
    *, project: Any, actions: list[str] | None = None, limit: int = 50
) -> QuerySet[AuditEntry]:
    """The latest decisions in ``project`` (optionally of some actions), newest first."""
    entries = AuditEntry.objects.filter(project=project)
    if actions:
        entries = entries.filter(action__in=actions)
    return entries.select_related("actor")[:limit]


def audit_entries_of(*, actions: list[str], limit: int = 50) -> QuerySet[AuditEntry]:
    """The latest decisions of these actions anywhere (role changes and pauses belong to no project)."""
    return AuditEntry.objects.filter(action__in=actions).select_related("actor")[:limit]
