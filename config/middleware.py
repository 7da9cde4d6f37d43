"""Request guards that run before any view reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

from config.jsonsafe import too_large_message


class BodySizeLimitMiddleware:
    """Refuse a body over DATA_UPLOAD_MAX_MEMORY_SIZE by its Content-Length, uploads included (Django's
    own limit leaves files out), with 413 and the JSON error body."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number.", "code": "invalid"}, status=400)
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return JsonResponse({"detail": too_large_message(size), "code": "too_large"}, status=413)
        return self.get_response(request)


RETRY_AFTER_S = 5


class DatabaseUnavailableMiddleware:
    """A database that is down, restarting or locked (SQLite) is a 503 with Retry-After, in the JSON
    error body under /api/, so that clients retry instead of treating it as a bug."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        message = "The database is unavailable for the moment; retry in a few seconds."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"detail": message, "code": "unavailable"}, status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
