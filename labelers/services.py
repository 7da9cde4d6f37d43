"""Writes about people: creating users with a role, changing role and status."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError, Conflict
from labelers.models import LabelerProfile, LabelerStatus, Role
from labelers.types import AuthUser

User = get_user_model()


@transaction.atomic
def user_create(
    *, username: str, password: str | None = None, role: str = Role.LABELER, email: str = "", first_name: str = ""
) -> AuthUser:
    """Create a user with a profile and an API token. Without a password the user gets an unusable
    one and sets their own from the password-reset link."""
    if role not in Role.values:
        raise ApplicationError(f"'{role}' is not one of {', '.join(Role.values)}.", code="invalid_role", field="role")
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError(f"'{username}' is already taken.", code="username_taken", field="username")
    user = User(username=username, email=email, first_name=first_name, is_staff=role == Role.ADMIN)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    LabelerProfile.objects.create(user=user, role=role)
    return user


def _is_active_admin(*, user: AuthUser, role: str, status: str) -> bool:
    return bool(user.is_active) and role == Role.ADMIN and status == LabelerStatus.ACTIVE


def _check_not_last_admin(*, user: AuthUser) -> None:
    """Raise when no other active admin would remain, for then nobody could manage users or
    projects. The active admins' profiles are locked first, so that two admins demoting each other
    at once cannot both pass."""
    admins = LabelerProfile.objects.filter(role=Role.ADMIN, status=LabelerStatus.ACTIVE, user__is_active=True)
    locked = admins.select_for_update(of=("self",)).order_by("pk").values_list("user_id", flat=True)
    others = any(user_id != user.pk for user_id in locked)
    # A superuser without a profile is an admin too (``labelers.selectors.user_role``).
    others = others or User.objects.filter(is_active=True, is_superuser=True, profile__isnull=True).exists()
    if not others:
        raise Conflict(
            f"'{user.get_username()}' is the only active admin; make another user an admin before "
            "demoting or pausing them.",
            code="last_admin",
        )


@transaction.atomic
def user_update(
    *,
    user: AuthUser,
    role: str | None = None,
    status: str | None = None,
    status_reason: str | None = None,
    actor: AuthUser | None,
    project: Any | None = None,
) -> AuthUser:
    """Change a user's role or working status (pause / reactivate). The last active admin cannot be
    demoted or paused (409 ``last_admin``). Each change is one audit row: by ``actor``, or by the
    loop (quality rules) when None, which the loop says explicitly; ``project`` is the project whose
    rule decided it, if any."""
    if role is not None and role not in Role.values:
        raise ApplicationError(f"'{role}' is not one of {', '.join(Role.values)}.", code="invalid_role", field="role")
    if status is not None and status not in LabelerStatus.values:
        raise ApplicationError(
            f"'{status}' is not one of {', '.join(LabelerStatus.values)}.", code="invalid_status", field="status"
        )
    # A superuser without a profile is an admin: the profile made for them must not demote them.
    default_role = Role.ADMIN if user.is_superuser else Role.LABELER
    profile, _ = LabelerProfile.objects.select_for_update().get_or_create(user=user, defaults={"role": default_role})
    old_role, old_status, old_reason = profile.role, profile.status, profile.status_reason
    new_role = role if role is not None else profile.role
    new_status = status if status is not None else profile.status
    if _is_active_admin(user=user, role=profile.role, status=profile.status) and not _is_active_admin(
        user=user, role=new_role, status=new_status
    ):
        _check_not_last_admin(user=user)
    if role is not None:
        profile.role = role
        user.is_staff = role == Role.ADMIN or user.is_superuser
        user.save(update_fields=["is_staff"])
    if status is not None:
        profile.status = status
        profile.status_reason = status_reason or ""
    profile.save()
    user.profile = profile  # keep the caller's cached profile current
    if profile.role != old_role:
        audit_record(
            actor=actor,
            action=AuditAction.ROLE_CHANGE,
            target=user,
            before={"role": old_role},
            after={"role": profile.role},
        )
    if profile.status != old_status:
        audit_record(
            actor=actor,
            action=AuditAction.LABELER_PAUSE if profile.status == LabelerStatus.PAUSED else AuditAction.LABELER_RESUME,
            target=user,
            project=project,
            reason=profile.status_reason,
            before={"status": old_status, "reason": old_reason},
            after={"status": profile.status, "reason": profile.status_reason},
        )
    return user
