"""Projects and guideline versions."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max

from annotation import rules
from annotation.models import Guideline, GuidelineAcknowledgement, Project, TaskMode
from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError, Conflict
from labelers.types import AuthUser

PROJECT_FIELDS = (
    "name",
    "description",
    "k",
    "task_mode",
    "overlap",
    "lease_minutes",
    "flags",
    "require_likert",
    "is_active",
    "gold_rate",
    "qualification_items",
    "qualification_threshold",
    "reliability_threshold",
    "reliability_min_labels",
    "review_kendall_w",
)


def _validate_project(project: Project) -> None:
    """The project rules (``annotation.rules``): bounds, the task mode, the flags. The serializer and
    the form take the same bounds, but a caller of the service gets the same answer without them."""
    if not project.name.strip():
        raise ApplicationError("must not be empty.", code="invalid", field="name")
    if project.task_mode not in TaskMode.values:
        raise ApplicationError(f"must be one of {', '.join(TaskMode.values)}.", code="invalid", field="task_mode")
    for field in rules.PROJECT_BOUNDS:
        problem = rules.project_bound_problem(field, getattr(project, field))
        if problem is not None:
            raise ApplicationError(problem, code="invalid", field=field)
        if field == "k" and project.task_mode == TaskMode.PAIRWISE and project.k != rules.PAIRWISE_K:
            raise ApplicationError(
                f"pairwise projects show exactly 2 responses, got {project.k}.", code="invalid", field="k"
            )
    try:
        project.flags = rules.flags_validate(project.flags)
    except rules.RuleViolation as exc:
        raise ApplicationError(exc.message, code=exc.code, field=exc.field) from None


@transaction.atomic
def project_create(*, created_by: AuthUser | None, guideline: str = "", **fields: Any) -> Project:
    """Create a project; an initial guideline body, when given, is published as version 1."""
    unknown = set(fields) - set(PROJECT_FIELDS)
    if unknown:
        raise ApplicationError("unknown project field.", code="invalid", field=sorted(unknown)[0])
    if Project.objects.filter(name=fields.get("name", "")).exists():
        raise Conflict(f"a project named '{fields['name']}' already exists.", code="name_taken", field="name")
    project = Project(created_by=created_by, **fields)
    _validate_project(project)
    project.save()
    if guideline.strip():
        project.current_guideline = guideline_publish(
            project=project, body=guideline, note="Initial version", published_by=created_by
        )
    return project


@transaction.atomic
def project_update(*, project: Project, **fields: Any) -> Project:
    """Change a project's settings. K and the task mode are fixed once response sets exist."""
    project = Project.objects.select_for_update().get(pk=project.pk)
    unknown = set(fields) - set(PROJECT_FIELDS)
    if unknown:
        raise ApplicationError("unknown project field.", code="invalid", field=sorted(unknown)[0])
    has_sets = project.response_sets.exists()
    for field in ("k", "task_mode"):
        if field in fields and fields[field] != getattr(project, field) and has_sets:
            raise Conflict(
                "cannot change once the project has response sets.", code="project_has_response_sets", field=field
            )
    if "name" in fields and Project.objects.exclude(pk=project.pk).filter(name=fields["name"]).exists():
        raise Conflict(f"a project named '{fields['name']}' already exists.", code="name_taken", field="name")
    for key, value in fields.items():
        setattr(project, key, value)
    _validate_project(project)
    project.save()
    return project


@transaction.atomic
def guideline_publish(*, project: Project, body: str, note: str = "", published_by: AuthUser | None) -> Guideline:
    """Publish the next immutable guideline version and make it the project's current one; one
    audit row, by ``published_by``."""
    if not body.strip():
        raise ApplicationError("the guideline must not be empty.", code="invalid", field="body")
    locked = Project.objects.select_for_update().get(pk=project.pk)
    latest = locked.guidelines.aggregate(v=Max("version"))["v"] or 0
    guideline = Guideline.objects.create(
        project=locked, version=latest + 1, body=body, note=note[:500], published_by=published_by
    )
    locked.current_guideline = guideline
    locked.save(update_fields=["current_guideline", "updated_at"])
    audit_record(
        actor=published_by,
        action=AuditAction.GUIDELINE_PUBLISH,
        target=guideline,
        project=locked,
        reason=guideline.note,
        before={"version": latest or None},
        after={"version": guideline.version},
    )
    project.current_guideline = guideline  # keep the caller's instance current
    return guideline


def guideline_acknowledge(*, guideline: Guideline, user: AuthUser) -> GuidelineAcknowledgement:
    """Record that ``user`` has read ``guideline``. Acknowledging twice is harmless."""
    try:
        with transaction.atomic():
            ack, _ = GuidelineAcknowledgement.objects.get_or_create(guideline=guideline, user=user)
    except IntegrityError:  # a concurrent double click
        ack = GuidelineAcknowledgement.objects.get(guideline=guideline, user=user)
    return ack
