from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from config import db
from labelers.models import ApiToken, LabelerProfile
from labelers.tokens import api_token_touch, token_digest, token_refusal


@cache
def _token_sql() -> str:
    user_model = get_user_model()
    return (
        f"SELECT {db.columns(ApiToken, 't')}, {db.columns(user_model, 'u')}, {db.columns(LabelerProfile, 'p')} "
        f"FROM {db.table(ApiToken)} t JOIN {db.table(user_model)} u ON u.id = t.user_id "
        f"LEFT JOIN {db.table(LabelerProfile)} p ON p.user_id = u.id WHERE t.digest = %s"
    )


class TokenWithProfileAuthentication(TokenAuthentication):
    """Authentication by API token (``labelers.tokens``), loading the token, its user and their role
    profile in one statement (every API call reads the profile for permissions, and a labeler's
    every item goes through here). The row also carries what decides whether the token still works
    (expiry, password, active, paused), so refusing one costs no second statement."""

    model = ApiToken

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        row = db.fetch_one(_token_sql(), [token_digest(key)])
        if row is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        token, end = db.instance(ApiToken, row)
        user, end = db.instance(get_user_model(), row, end)
        profile = None if row[end] is None else db.instance(LabelerProfile, row, end)[0]
        now = timezone.now()
        refusal = token_refusal(token=token, user=user, profile=profile, now=now)
        if refusal is not None:
            raise exceptions.AuthenticationFailed(refusal)
        token.user = user
        if profile is None:  # no profile: cache its absence, so ``user.profile`` raises without a query
            user._state.fields_cache["profile"] = None
        else:
            user.profile = profile
        api_token_touch(token=token, now=now)
        return (user, token)
