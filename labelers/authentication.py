from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class TokenWithProfileAuthentication(TokenAuthentication):
    """DRF's token authentication, loading the user's role profile in the same query (every API
    call reads it for permissions)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        token = Token.objects.select_related("user", "user__profile").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return (token.user, token)
