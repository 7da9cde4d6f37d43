"""Role permissions for the API: labeler, admin, ML engineer."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from labelers.models import Role
from labelers.selectors import user_role


class _HasRole(BasePermission):
    roles: tuple[str, ...] = ()
    message = "Your role may not do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return user_role(user=request.user) in self.roles


class IsLabeler(_HasRole):
    roles = (Role.LABELER,)
    message = "Only labelers may do this."


class IsAdmin(_HasRole):
    roles = (Role.ADMIN,)
    message = "Only admins may do this."


class IsStaff(_HasRole):
    """Admins and ML engineers: the roles that see data across labelers."""

    roles = (Role.ADMIN, Role.ML_ENGINEER)
    message = "Only admins and ML engineers may do this."


class HasAnyRole(_HasRole):
    roles = tuple(Role.values)
    message = "Your account has no role on this platform."
