from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from config import db
from labelers.models import LabelerProfile


@cache
def _token_sql() -> str:
    user_model = get_user_model()
    return (
        f"SELECT {db.columns(Token, 't')}, {db.columns(user_model, 'u')}, {db.columns(LabelerProfile, 'p')} "
        f"FROM {db.table(Token)} t JOIN {db.table(user_model)} u ON u.id = t.user_id "
        f"LEFT JOIN {db.table(LabelerProfile)} p ON p.user_id = u.id WHERE t.key = %s"
    )


class TokenWithProfileAuthentication(TokenAuthentication):
    """DRF's token authentication, loading the user and their role profile in one statement (every
    API call reads the profile for permissions, and a labeler's every item goes through here)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        row = db.fetch_one(_token_sql(), [key])
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token, end = db.instance(Token, row)
        user, end = db.instance(get_user_model(), row, end)
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        token.user = user
        if row[end] is None:  # no profile: cache its absence, so ``user.profile`` raises without a query
            user._state.fields_cache["profile"] = None
        else:
            user.profile, _ = db.instance(LabelerProfile, row, end)
        return (user, token)
