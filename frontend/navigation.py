"""The navigation bar: one list per role, so the pages that follow only add an entry here."""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from django.urls import reverse

from labelers.models import Role
from labelers.selectors import user_role


@dataclass(frozen=True)
class NavItem:
    label: str
    url: str
    section: str
    soon: bool = False


def nav_items(request: HttpRequest) -> list[NavItem]:
    role = user_role(user=request.user)
    if role == Role.LABELER:
        return [NavItem("My work", reverse("frontend:home"), "work")]
    if role in (Role.ADMIN, Role.ML_ENGINEER):
        items = [
            NavItem("Projects", reverse("frontend:project_list"), "projects"),
            NavItem("Quality", reverse("frontend:quality_index"), "quality"),
            NavItem("Training", reverse("frontend:training_index"), "training"),
        ]
        if role == Role.ADMIN:
            items.insert(1, NavItem("Labelers", reverse("frontend:labeler_list"), "labelers"))
        return items
    return []
