"""Request guards that run before any view reads the body."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
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
