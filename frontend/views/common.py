"""What every page view shares: role checks, JSON answers for the ranking widget, error pages."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from config import jsonsafe
from config.exceptions import ApplicationError
from labelers.models import Role
from labelers.selectors import user_role

ViewFunc = Callable[..., HttpResponse]


def error_page(request: HttpRequest, *, title: str, message: str, status: int) -> HttpResponse:
    return render(request, "frontend/error.html", {"title": title, "message": message}, status=status)


def role_required(*roles: str) -> Callable[[ViewFunc], ViewFunc]:
    """Pages for some roles only: anonymous users go to the login page, other roles get a 403 page."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if user_role(user=request.user) not in roles:
                names = " or ".join(Role(role).label.lower() + "s" for role in roles)
                return error_page(
                    request, title="Not for your role", message=f"Only {names} use this page.", status=403
                )
            try:
                return view(request, *args, **kwargs)
            except ApplicationError as exc:
                return error_page(request, title="That did not work", message=exc.message, status=exc.status)

        return wrapped

    return decorator


def json_role_required(*roles: str) -> Callable[[ViewFunc], ViewFunc]:
    """Endpoints the ranking widget calls: an expired session answers 401 so the page can ask the
    labeler to log in again and resend what they had, instead of following a redirect."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return JsonResponse(
                    {
                        "detail": "Your session has expired. Log in again to send your work.",
                        "code": "not_authenticated",
                    },
                    status=401,
                )
            if user_role(user=request.user) not in roles:
                return JsonResponse({"detail": "Your role may not do this.", "code": "permission_denied"}, status=403)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def error_json(exc: ApplicationError) -> JsonResponse:
    return JsonResponse(exc.as_body(), status=exc.status)


def json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = jsonsafe.loads(request.body or b"{}")
    except ValueError as exc:
        raise ApplicationError(f"The request body is not valid JSON: {exc}.", code="invalid") from None
    if not isinstance(body, dict):
        raise ApplicationError("The request body must be a JSON object.", code="invalid")
    return body


def is_admin(request: HttpRequest) -> bool:
    return user_role(user=request.user) == Role.ADMIN


def current_user(request: HttpRequest) -> AbstractBaseUser:
    """The logged-in user of a view behind a role check (never anonymous there)."""
    user = request.user
    assert isinstance(user, AbstractBaseUser)
    return user


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"
