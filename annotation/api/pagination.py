"""Pages of the API's list views."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def paginate(request: Request, view: APIView, queryset: Any, serializer: type[serializers.Serializer]) -> Response:
    """One page (limit / offset) of a list view; the view names LimitOffsetPagination as its
    pagination_class, which is also how the schema documents the page and its parameters."""
    paginator = LimitOffsetPagination()
    page: Any = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)
