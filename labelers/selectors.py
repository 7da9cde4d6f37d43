"""Reads about people: roles, status and API tokens."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone

from labelers.models import ApiToken, Role
from labelers.tokens import api_token_live
from labelers.types import AuthUser

User = get_user_model()


def user_role(*, user: AuthUser) -> str | None:
    """The user's role; superusers are admins; ``None`` for anonymous users and users without one."""
    if not user.is_authenticated:
        return None
    profile = getattr(user, "profile", None)
    if profile is not None:
        return profile.role
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    return None


def user_list(*, role: str | None = None) -> QuerySet:
    qs = User.objects.select_related("profile").order_by("username")
    if role:
        qs = qs.filter(profile__role=role)
    return qs


def api_token_list(*, user: AuthUser) -> QuerySet[ApiToken]:
    """``user``'s tokens that still work, newest first."""
    return ApiToken.objects.filter(api_token_live(user=user, now=timezone.now())).order_by("-created_at", "-pk")
