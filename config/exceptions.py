"""One application error type and the DRF handler that turns every error into a 4xx body.

Every error body is ``{"detail": str, "code": str}`` plus ``"errors"`` when the problem is in
particular fields or rows: ``[{"line": 3, "field": "responses", "message": "..."}]``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApplicationError(Exception):
    """A business rule said no. ``status`` is the HTTP status the API answers with.

    ``field`` names the input at fault: the message is then about that field alone, ``detail``
    reads ``"<field>: <message>"`` and ``errors`` carries it as data, so that a page puts the
    message next to the field without parsing the text."""

    status: int = status.HTTP_400_BAD_REQUEST
    code: str = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        field: str | None = None,
    ) -> None:
        if field:
            errors = errors or [{"field": field, "message": message}]
            message = f"{field}: {message}"
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors or []

    def field_messages(self) -> dict[str, str]:
        """The first message for each field named in ``errors`` (``""``: not about one field)."""
        out: dict[str, str] = {}
        for error in self.errors:
            out.setdefault(str(error.get("field", "")), str(error.get("message", "")))
        return out

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


class NotFound(ApplicationError):
    status = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status = status.HTTP_409_CONFLICT
    code = "conflict"


class Unavailable(ApplicationError):
    """A service the request needs (the broker, the database) is down for now: 503 with Retry-After."""

    status = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"
    retry_after_s = 10


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    """Turn DRF's nested error dict into a flat list of ``{"field", "message"}``."""
    out: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "non_field_errors":
                name = prefix
            out.extend(_flatten(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out.extend({"field": prefix, "message": str(item)} for item in detail)
        else:
            for index, item in enumerate(detail):
                out.extend(_flatten(item, f"{prefix}[{index}]"))
    else:
        out.append({"field": prefix, "message": str(detail)})
    return out


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Unavailable) else None
        return Response(exc.as_body(), status=exc.status, headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = errors[0] if errors else {"field": "", "message": "Invalid input."}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return Response({"detail": detail, "code": "invalid", "errors": errors}, status=400)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "detail": str(exc.detail) if not isinstance(exc.detail, dict | list) else exc.default_detail,
            "code": codes if isinstance(codes, str) else exc.default_code,
        }
    return response


# --- Django's own error views: the JSON error body under /api/, Django's pages elsewhere ---------


def _api_path(request: Any) -> bool:
    return str(getattr(request, "path", "")).startswith("/api/")


def handler400(request: Any, exception: Exception) -> Any:
    from django.views import defaults

    if _api_path(request):
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def handler404(request: Any, exception: Exception) -> Any:
    from django.views import defaults

    if _api_path(request):
        return JsonResponse({"detail": f"No API endpoint at {request.path}.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def handler500(request: Any) -> Any:
    from django.views import defaults

    if _api_path(request):
        return JsonResponse({"detail": "Server error; it has been logged.", "code": "server_error"}, status=500)
    return defaults.server_error(request)
