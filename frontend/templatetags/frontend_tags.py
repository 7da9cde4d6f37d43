from __future__ import annotations

from typing import Any

from django import template

from frontend.navigation import NavItem, nav_items

register = template.Library()


@register.simple_tag(takes_context=True)
def navigation(context: dict[str, Any]) -> list[NavItem]:
    request = context.get("request")
    return nav_items(request) if request is not None else []


@register.filter
def duration(ms: int | None) -> str:
    """Milliseconds as ``1m 05s`` / ``42.0s``; an em dash when there is nothing to show."""
    if ms is None:
        return "—"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s"


@register.filter
def get_item(mapping: dict[Any, Any], key: Any) -> Any:
    return mapping.get(key)
