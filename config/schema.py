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
