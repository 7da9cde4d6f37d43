"""Move rest_framework.authtoken's plaintext tokens into ApiToken, hashed, and delete them there.

Existing clients keep working with the token they have, until it expires one API_TOKEN_TTL_DAYS
after this migration. The old table is read with plain SQL, and only if it exists, so that this
migration declares no dependency on rest_framework.authtoken and survives its removal from
INSTALLED_APPS. The hashing is written out here rather than imported, so that this migration keeps
meaning what it meant when it ran.
"""

import hashlib
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

LEGACY_TABLE = "authtoken_token"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(value, default):
    """A datetime read by plain SQL: SQLite gives it naive (in UTC) or as text."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        return default
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("labelers", "ApiToken")
    User = apps.get_model(settings.AUTH_USER_MODEL)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} FROM {quote(LEGACY_TABLE)}")
        rows = cursor.fetchall()
    if not rows:
        return
    passwords = dict(User.objects.filter(pk__in=[user_id for _, user_id, _ in rows]).values_list("pk", "password"))
    now = timezone.now()
    expires_at = now + timedelta(days=getattr(settings, "API_TOKEN_TTL_DAYS", 30))
    ApiToken.objects.bulk_create(
        [
            ApiToken(
                user_id=user_id,
                name="migrated",
                prefix=key[:8],
                digest=_sha256(key),
                password_fingerprint=_sha256(passwords[user_id]),
                created_at=_aware(created, now),
                expires_at=expires_at,
            )
            for key, user_id, created in rows
            if user_id in passwords
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(LEGACY_TABLE)}")


class Migration(migrations.Migration):

    dependencies = [
        ('labelers', '0003_api_tokens'),
    ]

    # Backwards there is nothing to restore: the plaintext keys are gone, by design.
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
