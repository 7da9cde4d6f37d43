"""API tokens: issuing and revoking them, and the rule that says whether one still works.

A token is 32 random bytes (URL-safe base64). The database keeps only its SHA-256 digest: with
that much entropy a fast hash is enough (nothing to guess), and the lookup on every API call stays
one index probe. A token ends when it expires, when it is revoked (its row is deleted), when its
user's password changes and while its user is inactive or paused.

Authentication imports this module while DRF itself is still loading (DRF reads its
authentication classes on import), so it keeps to models and ``config.db``: nothing that imports
``rest_framework.views``, as ``config.exceptions`` does.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from config import db
from labelers.models import ApiToken, LabelerStatus
from labelers.types import AuthUser

TOKEN_BYTES = 32
PREFIX_LENGTH = 8
DEFAULT_TTL_DAYS = 30
# last_used_at is written at most this often per token: a write on every call would double the
# statements of the labeling hot path.
TOUCH_INTERVAL = timedelta(minutes=1)


def token_digest(secret: str) -> str:
    """The stored form of a token's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def password_fingerprint(password_hash: str) -> str:
    """What a token remembers of its user's password hash: a new password (set anywhere, by any
    means) gives a new fingerprint, so the token stops working without anyone revoking it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()


def token_ttl() -> timedelta:
    """How long a new token works (``API_TOKEN_TTL_DAYS``, 30 days unless set)."""
    return timedelta(days=getattr(settings, "API_TOKEN_TTL_DAYS", DEFAULT_TTL_DAYS))


def token_refusal(*, token: ApiToken, user: AuthUser, profile: Any, now: datetime) -> str | None:
    """Why ``token`` may not authenticate ``user`` now (the message of the 401), or ``None``."""
    if not user.is_active:
        return "User inactive or deleted."
    if profile is not None and profile.status == LabelerStatus.PAUSED:
        reason = f" ({profile.status_reason})" if profile.status_reason else ""
        return f"Your account is paused{reason}."
    if token.password_fingerprint != password_fingerprint(user.password):
        return "Token revoked: the password was changed since it was issued."
    if token.expires_at <= now:
        return "Token has expired."
    return None


def api_token_live(*, user: AuthUser, now: datetime) -> Q:
    """The filter for ``user``'s tokens that still work (the user's own state aside)."""
    return Q(user=user, expires_at__gt=now, password_fingerprint=password_fingerprint(user.password))


@transaction.atomic
def api_token_create(*, user: AuthUser, name: str = "") -> tuple[ApiToken, str]:
    """Issue a new token for ``user``; returns it and its secret, which is not stored anywhere.
    The user's dead tokens (expired, or from before a password change) are cleared on the way."""
    now = timezone.now()
    ApiToken.objects.filter(user=user).exclude(api_token_live(user=user, now=now)).delete()
    secret = secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        digest=token_digest(secret),
        password_fingerprint=password_fingerprint(user.password),
        created_at=now,
        expires_at=now + token_ttl(),
    )
    return token, secret


def api_token_revoke(*, user: AuthUser, token_id: int) -> bool:
    """Revoke one of ``user``'s tokens; ``False`` when ``user`` has no such token."""
    return db.fits_id(token_id) and ApiToken.objects.filter(user=user, pk=token_id).delete()[0] > 0


def api_token_touch(*, token: ApiToken, now: datetime) -> None:
    """Record that ``token`` was used, unless that was recorded less than ``TOUCH_INTERVAL`` ago."""
    if token.last_used_at is not None and now - token.last_used_at < TOUCH_INTERVAL:
        return
    # Conditional, so that concurrent requests with one token write once between them.
    db.execute(
        f"UPDATE {db.table(ApiToken)} SET last_used_at = %s "
        "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)",
        [db.db_datetime(now), token.pk, db.db_datetime(now - TOUCH_INTERVAL)],
    )
    token.last_used_at = now
