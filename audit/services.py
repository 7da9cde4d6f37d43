"""Writing the audit trail. Called by the service that makes a decision, inside its transaction, so a
decision and its row are written together or not at all."""

from __future__ import annotations

from typing import Any

from django.db import models

from audit.models import AuditEntry


def target_key(obj: models.Model) -> str:
    """``<app>.<model>:<pk>``: how an entry names what it is about."""
    return f"{obj._meta.label_lower}:{obj.pk}"


def audit_record(
    *,
    actor: Any | None,
    action: str,
    target: models.Model,
    project: Any | None = None,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """One row for one decision. ``actor`` None (or anonymous) means the loop decided."""
    person = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEntry.objects.create(
        actor=person,
        actor_name=person.get_username() if person is not None else "",
        action=action,
        project=project,
        target=target_key(target),
        target_label=str(target)[:200],
        reason=reason,
        before=before or {},
        after=after or {},
    )
