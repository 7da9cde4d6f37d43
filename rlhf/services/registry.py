"""The model registry: register a model, make a version the current one of its kind (promote, roll
back), and say which versions are current."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Project, Prompt
from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError, Conflict
from labelers.types import AuthUser
from rlhf.models import ModelKind, ModelState, ModelVersion
from rlhf.sources import model_source_problem
from rlhf.training.checks import model_role_problem


def model_version_register(
    *,
    project: Project | None,
    kind: str,
    name: str,
    path: str,
    parent: ModelVersion | None = None,
    notes: str = "",
    is_reference: bool = False,
    promote: bool = False,
    trust_remote_code: bool = False,
    actor: AuthUser | None,
) -> ModelVersion:
    """Register a model that exists outside the platform (an SFT checkpoint, a hub id). The path
    must be a directory under settings.MODEL_ROOTS or a hub id on settings.MODEL_HUB_ALLOWLIST; a
    model that cannot serve its role (read from its config and tokenizer) is refused here.
    trust_remote_code lets loading run the model's own code: the callers that set it are the
    server's (the management command, the Django admin), never a run config. ``actor``: who
    registered it, None for the loop or a set-up script (recorded when ``promote`` makes it current)."""
    if kind not in ModelKind.values:
        raise ApplicationError(f"must be one of {', '.join(ModelKind.values)}.", code="invalid", field="kind")
    if not name.strip():
        raise ApplicationError("must not be empty.", code="invalid", field="name")
    if not path.strip():
        raise ApplicationError("give a local directory or a hub id.", code="invalid", field="path")
    if ModelVersion.objects.filter(project=project, kind=kind, name=name).exists():
        raise Conflict(_name_taken(kind, name), code="name_taken", field="name")
    if is_reference and kind != ModelKind.POLICY:
        raise ApplicationError(
            "only a policy (the SFT model) can be the KL reference.", code="invalid", field="is_reference"
        )
    source = model_source_problem(path)
    if source is not None:
        raise ApplicationError(source, code="invalid_model", field="path")
    # Outside the transaction: reading a hub model's config and tokenizer may take a while.
    problem = model_role_problem(
        path,
        kind,
        needs_chat_template=project is not None and _has_chat_prompts(project),
        trust_remote_code=trust_remote_code,
    )
    if problem is not None:  # always about the path, and said so ("path: ...") by the plain-Python check
        raise ApplicationError(problem.removeprefix("path: "), code="invalid_model", field="path")
    with transaction.atomic():
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    project=project,
                    kind=kind,
                    name=name,
                    path=path,
                    parent=parent,
                    notes=notes,
                    is_reference=is_reference,
                    trust_remote_code=trust_remote_code,
                )
        except IntegrityError:  # registered by someone else while this model was being read
            raise Conflict(_name_taken(kind, name), code="name_taken", field="name") from None
        if promote:
            version = model_version_promote(version=version, actor=actor, reason="promoted when registered")
    return version


def _name_taken(kind: str, name: str) -> str:
    return f"a {kind} model named '{name}' already exists in this project."


def _has_chat_prompts(project: Project) -> bool:
    return Prompt.objects.filter(project=project, messages__isnull=False).exists()


def promoted_version(project: Project, kind: str) -> ModelVersion | None:
    """The current (promoted) version of ``kind`` in ``project``."""
    return ModelVersion.objects.filter(project=project, kind=kind, state=ModelState.PROMOTED).first()


def reference_version(project: Project) -> ModelVersion | None:
    """The SFT model: the newest policy version marked as the KL reference."""
    return (
        ModelVersion.objects.filter(project=project, kind=ModelKind.POLICY, is_reference=True)
        .order_by("-created_at")
        .first()
    )


def _version_ref(version: ModelVersion | None) -> dict[str, Any]:
    return {"version": version.pk, "name": version.name} if version is not None else {}


def _lock_kind(project_id: int | None, kind: str) -> None:
    """Lock every version of one kind in one project: promotions and rollbacks of that kind go one
    after the other, so the current version and the one it replaces are read and changed together."""
    list(ModelVersion.objects.select_for_update().filter(project=project_id, kind=kind).values_list("pk", flat=True))


def _make_current(*, version: ModelVersion, actor: AuthUser | None, action: str, reason: str) -> ModelVersion:
    """The one change behind promote and rollback, under ``_lock_kind``: ``version`` becomes the promoted
    model of its kind, the one it replaces is archived, the project's current policy follows, and one
    audit row records who did it, why, and the current version before and after."""
    before = (
        ModelVersion.objects.filter(project=version.project_id, kind=version.kind, state=ModelState.PROMOTED)
        .exclude(pk=version.pk)
        .first()
    )
    if before is not None:
        ModelVersion.objects.filter(pk=before.pk).update(state=ModelState.ARCHIVED)
    version.state = ModelState.PROMOTED
    version.promoted_at = timezone.now()
    version.save(update_fields=["state", "promoted_at"])
    if version.kind == ModelKind.POLICY and version.project_id:
        Project.objects.filter(pk=version.project_id).update(current_policy=version)
    audit_record(
        actor=actor,
        action=action,
        target=version,
        project=version.project,
        reason=reason,
        before=_version_ref(before),
        after=_version_ref(version),
    )
    return version


@transaction.atomic
def model_version_promote(*, version: ModelVersion, actor: AuthUser | None, reason: str = "") -> ModelVersion:
    """Make ``version`` the promoted model of its kind in one step; the previous one is archived.
    ``actor`` None: the loop promoted it (``reason`` then says which gate passed)."""
    _lock_kind(version.project_id, version.kind)
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.state == ModelState.PROMOTED:
        return version
    return _make_current(version=version, actor=actor, action=AuditAction.MODEL_PROMOTE, reason=reason)


@transaction.atomic
def model_version_rollback(*, project: Project, kind: str, actor: AuthUser | None, reason: str = "") -> ModelVersion:
    """Promote again the version that was promoted before the current one."""
    _lock_kind(project.pk, kind)
    current = promoted_version(project, kind)
    if current is None:
        raise Conflict(f"No promoted {kind} model to roll back.", code="nothing_promoted")
    previous = (
        ModelVersion.objects.filter(
            project=project, kind=kind, promoted_at__isnull=False, promoted_at__lt=current.promoted_at
        )
        .exclude(pk=current.pk)
        .order_by("-promoted_at")
        .first()
    )
    if previous is None:
        raise Conflict(f"There is no earlier promoted {kind} model to roll back to.", code="no_previous")
    return _make_current(version=previous, actor=actor, action=AuditAction.MODEL_ROLLBACK, reason=reason)


def optimised_against(policy: ModelVersion) -> set[int]:
    """The reward models ``policy`` and the policies it descends from were trained by PPO to please:
    a policy can exploit each of them, so none of them can judge it."""
    seen: set[int] = set()
    rewards: set[int] = set()
    current: ModelVersion | None = policy
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        run = current.run
        if run is not None and run.reward_model_id is not None:
            rewards.add(run.reward_model_id)
        current = current.parent
    return rewards


def independent_judge(
    project: Project, *, candidate_parent: ModelVersion, optimised: ModelVersion
) -> ModelVersion | None:
    """A reward model that can judge a PPO policy trained from ``candidate_parent`` against
    ``optimised``: the one promoted most recently that neither the candidate nor the policy it is
    compared with (``candidate_parent``) was ever optimised against, along either's lineage. A
    policy sits near a maximum of the models it was trained to please, so such a model would
    favour it; one it never saw judges both alike. None when the project has no such model."""
    excluded = optimised_against(candidate_parent) | {optimised.pk}
    return (
        ModelVersion.objects.filter(project=project, kind=ModelKind.REWARD, promoted_at__isnull=False)
        .exclude(pk__in=excluded)
        .order_by("-promoted_at", "-id")
        .first()
    )
