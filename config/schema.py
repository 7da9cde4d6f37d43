"""OpenAPI schema generation: one component name per serializer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema


class AutoSchema(SpectacularAutoSchema):
    """Names a serializer nested in a view after the view: ``RankingSubmitApi.InputSerializer`` is
    ``RankingSubmitInput`` (``RankingSubmitInputRequest`` as a request body), where drf-spectacular
    would give every view's ``InputSerializer`` the same name and one schema for all of them."""

    def get_serializer_name(self, serializer: Any, direction: Any) -> str:
        name = super().get_serializer_name(serializer, direction)
        cls = serializer if isinstance(serializer, type) else type(serializer)
        parts = cls.__qualname__.split(".")
        if len(parts) > 1 and name == parts[-1]:
            return parts[-2].removesuffix("Api").removesuffix("View") + name
        return name


ERROR_STATUSES = {
    "400": "The request is wrong: `detail` says what and where; `errors` lists each field or row.",
    "401": "No valid credentials.",
    "403": "This role may not do this.",
    "404": "No such object (or not visible to this user).",
    "409": "The request conflicts with the current state (`code` says which).",
    "413": "The body is over the size limit.",
    "429": "Too many failed logins: retry after `Retry-After` seconds.",
    "503": "A service is down for now (database, task queue): retry after `Retry-After` seconds.",
}
ERROR_BODY = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "line": {"type": "integer"},
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "required": ["detail", "code"],
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Every operation documents the error answers it can give, all with the one error body
    (config.exceptions), so that a client generated from the schema knows them."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_BODY
    ref = {"$ref": "#/components/schemas/Error"}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_STATUSES.items():
                responses.setdefault(
                    code, {"description": description, "content": {"application/json": {"schema": ref}}}
                )
    return result
