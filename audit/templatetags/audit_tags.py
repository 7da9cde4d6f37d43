"""``{% audit_trail target %}`` and ``{% project_audit_trail project %}``: the decisions made here,
shown on the page where they are made."""

from __future__ import annotations

from typing import Any

from django import template

from audit.selectors import audit_entries_for, audit_entries_for_project, audit_entries_of

register = template.Library()


@register.inclusion_tag("audit/_trail.html")
def audit_trail(target: Any, limit: int = 10) -> dict[str, Any]:
    return {"entries": list(audit_entries_for(target=target, limit=limit))}


@register.inclusion_tag("audit/_trail.html")
def project_audit_trail(project: Any, actions: str = "", limit: int = 20) -> dict[str, Any]:
    wanted = [a for a in actions.split(",") if a]
    return {"entries": list(audit_entries_for_project(project=project, actions=wanted, limit=limit))}


@register.inclusion_tag("audit/_trail.html")
def audit_trail_of(actions: str, limit: int = 20) -> dict[str, Any]:
    return {"entries": list(audit_entries_of(actions=[a for a in actions.split(",") if a], limit=limit))}
