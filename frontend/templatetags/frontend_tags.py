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


@register.filter
def pct(value: float | None, digits: int = 1) -> str:
    """A share in 0..1 as ``72.6%``; an em dash when there is none."""
    if value is None:
        return "—"
    return f"{value * 100:.{digits}f}%"


@register.filter
def num(value: float | None, digits: int = 3) -> str:
    """A statistic such as kappa or alpha, ``0.642``; an em dash when there is none."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}"


@register.filter
def ago(seconds: float | None) -> str:
    """An age in seconds as ``just now``, ``3 min ago``, ``2 h ago`` or ``4 days ago``."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


@register.filter
def seconds(value: float | None) -> str:
    """A remaining time as ``45 s``, ``3 min 05 s`` or ``2 h 10 min``; an em dash when unknown."""
    if value is None:
        return "—"
    total = round(value)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(total, 3600)
    return f"{hours} h {rest // 60:02d} min"
