"""Writes about people: creating users with a role, changing role and status."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token

from config.exceptions import ApplicationError
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
        raise ApplicationError(f"role: '{role}' is not one of {', '.join(Role.values)}.", code="invalid_role")
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError(f"username: '{username}' is already taken.", code="username_taken")
    user = User(username=username, email=email, first_name=first_name, is_staff=role == Role.ADMIN)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    LabelerProfile.objects.create(user=user, role=role)
    Token.objects.create(user=user)
    return user


@transaction.atomic
def user_update(
    *, user: AuthUser, role: str | None = None, status: str | None = None, status_reason: str | None = None
) -> AuthUser:
    """Change a user's role or working status (pause / reactivate)."""
    profile, _ = LabelerProfile.objects.select_for_update().get_or_create(user=user)
    if role is not None:
        if role not in Role.values:
            raise ApplicationError(f"role: '{role}' is not one of {', '.join(Role.values)}.", code="invalid_role")
        profile.role = role
        user.is_staff = role == Role.ADMIN or user.is_superuser
        user.save(update_fields=["is_staff"])
    if status is not None:
        if status not in LabelerStatus.values:
            raise ApplicationError(
                f"status: '{status}' is not one of {', '.join(LabelerStatus.values)}.", code="invalid_status"
            )
        profile.status = status
        profile.status_reason = status_reason or ""
    profile.save()
    user.profile = profile  # keep the caller's cached profile current
    return user
