"""API tokens: stored hashed, issued anew on every login, listed, revoked, ended by expiry, logout,
a new password and a paused or inactive account; one statement per authenticated request."""

from __future__ import annotations

import hashlib
import importlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labelers.models import ApiToken, LabelerStatus, Role
from labelers.services import user_update
from labelers.tokens import api_token_create

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's
TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT")


def _login(username: str, **extra: str) -> str:
    answer = APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": PASSWORD, **extra}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert set(answer.json()) == {"token"}
    return answer.json()["token"]


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    return client


def _expire(token: ApiToken) -> None:
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(
        created_at=now - timedelta(days=31), expires_at=now - timedelta(seconds=1)
    )


def _refused(secret: str, detail: str) -> None:
    answer = _client(secret).get("/api/v1/me/")
    assert (answer.status_code, answer.json()) == (401, {"detail": detail, "code": "authentication_failed"})
    assert answer["WWW-Authenticate"] == "Token"


def test_a_login_issues_a_new_token_each_time_and_each_works(labeler):
    first, second = _login("lena"), _login("lena", name="laptop")
    assert first != second
    for secret in (first, second):
        me = _client(secret).get("/api/v1/me/")
        assert (me.status_code, me.json()["username"]) == (200, "lena")
    assert sorted(ApiToken.objects.filter(user=labeler).values_list("name", flat=True)) == ["", "laptop"]


def test_only_a_digest_of_the_secret_is_stored(labeler):
    secret = _login("lena")
    token = ApiToken.objects.get(user=labeler)
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest() != secret
    assert token.prefix == secret[:8]
    stored = [str(value) for value in ApiToken.objects.values_list().get()]
    assert not any(secret in value for value in stored)


def test_a_token_lives_for_the_configured_days(labeler, settings):
    settings.API_TOKEN_TTL_DAYS = 2
    token, _ = api_token_create(user=labeler)
    assert token.expires_at - token.created_at == timedelta(days=2)


def test_an_expired_token_is_refused_with_its_reason(labeler):
    token, secret = api_token_create(user=labeler)
    assert _client(secret).get("/api/v1/me/").status_code == 200
    _expire(token)
    _refused(secret, "Token has expired.")
    assert _client(secret).get("/api/v1/auth/tokens/").status_code == 401


def test_an_unknown_token_is_refused(labeler):
    _refused("not-a-token", "Invalid token.")


def test_a_token_revoked_by_delete_stops_working_and_the_others_do_not(labeler):
    kept, revoked = _login("lena"), _login("lena")
    revoked_id = ApiToken.objects.get(digest=hashlib.sha256(revoked.encode()).hexdigest()).pk
    answer = _client(kept).delete(f"/api/v1/auth/tokens/{revoked_id}/")
    assert answer.status_code == 204
    _refused(revoked, "Invalid token.")
    assert _client(kept).get("/api/v1/me/").status_code == 200
    again = _client(kept).delete(f"/api/v1/auth/tokens/{revoked_id}/")
    assert (again.status_code, again.json()) == (404, {"detail": f"Token {revoked_id} not found.", "code": "not_found"})


def test_logout_revokes_the_token_it_was_made_with(labeler):
    other, used = _login("lena"), _login("lena")
    answer = _client(used).post("/api/v1/auth/logout/")
    assert answer.status_code == 204
    _refused(used, "Invalid token.")
    assert _client(other).get("/api/v1/me/").status_code == 200


def test_logout_without_a_token_says_so(labeler, client_for):
    answer = client_for(labeler).post("/api/v1/auth/logout/")
    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": "This request was not made with an API token.", "code": "no_token"},
    )


def test_a_new_password_ends_the_tokens_issued_before_it(labeler):
    secret = _login("lena")
    labeler.set_password("a-new-password-1")
    labeler.save()
    _refused(secret, "Token revoked: the password was changed since it was issued.")
    after = APIClient().post("/api/v1/auth/token/", {"username": "lena", "password": "a-new-password-1"}, format="json")
    tokens = _client(after.json()["token"]).get("/api/v1/auth/tokens/").json()
    assert len(tokens) == 1  # the old one is neither listed nor kept
    assert ApiToken.objects.filter(user=labeler).count() == 1


def test_a_password_changed_on_the_password_page_ends_the_tokens(labeler, client):
    secret = _login("lena")
    client.force_login(labeler)
    answer = client.post(
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": "a-new-password-1", "new_password2": "a-new-password-1"},
    )
    assert answer.status_code == 302
    _refused(secret, "Token revoked: the password was changed since it was issued.")


def test_a_paused_or_inactive_users_token_is_refused(labeler):
    secret = _login("lena")
    user_update(user=labeler, status=LabelerStatus.PAUSED, status_reason="gold accuracy 40%", actor=None)
    _refused(secret, "Your account is paused (gold accuracy 40%).")
    user_update(user=labeler, status=LabelerStatus.ACTIVE, actor=None)
    assert _client(secret).get("/api/v1/me/").status_code == 200
    labeler.is_active = False
    labeler.save(update_fields=["is_active"])
    _refused(secret, "User inactive or deleted.")


def test_the_list_shows_the_callers_live_tokens_and_never_a_secret(labeler, make_user):
    otto = make_user(Role.LABELER, username="otto")
    # The same password hash, so that only ownership tells otto's tokens from lena's.
    type(otto).objects.filter(pk=otto.pk).update(password=labeler.password)
    others = _login("otto")
    mine = _login("lena", name="laptop")
    expired, expired_secret = api_token_create(user=labeler, name="old")
    _expire(expired)
    answer = _client(mine).get("/api/v1/auth/tokens/")
    assert answer.status_code == 200
    token = ApiToken.objects.get(user=labeler, name="laptop")
    assert answer.json() == [
        {
            "id": token.pk,
            "prefix": mine[:8],
            "name": "laptop",
            "created_at": token.created_at.isoformat().replace("+00:00", "Z"),
            "expires_at": token.expires_at.isoformat().replace("+00:00", "Z"),
            "last_used_at": answer.json()[0]["last_used_at"],
            "current": True,
        }
    ]
    assert answer.json()[0]["last_used_at"] is not None
    body = answer.content.decode()
    assert mine not in body and others not in body and expired_secret not in body and token.digest not in body


def test_another_users_token_is_not_found_and_keeps_working(labeler, make_user):
    make_user(Role.LABELER, username="otto")
    others = _login("otto")
    others_id = ApiToken.objects.get(user__username="otto").pk
    answer = _client(_login("lena")).delete(f"/api/v1/auth/tokens/{others_id}/")
    assert (answer.status_code, answer.json()) == (
        404,
        {"detail": f"Token {others_id} not found.", "code": "not_found"},
    )
    assert _client(others).get("/api/v1/me/").status_code == 200
    big = 10**25
    assert _client(others).delete(f"/api/v1/auth/tokens/{big}/").json()["detail"] == f"Token {big} not found."


def _statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if not query["sql"].startswith(TRANSACTION_CONTROL)]


def test_an_authenticated_request_is_one_statement_and_last_use_is_kept_to_the_minute(labeler):
    token, secret = api_token_create(user=labeler)
    client = _client(secret)
    with CaptureQueriesContext(connection) as first:
        assert client.get("/api/v1/me/").status_code == 200
    assert len(_statements(first)) == 2  # the token with its user and profile; last_used_at
    token.refresh_from_db()
    assert token.last_used_at is not None
    with CaptureQueriesContext(connection) as again:
        assert client.get("/api/v1/me/").status_code == 200
    assert len(_statements(again)) == 1
    earlier = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=earlier)
    assert client.get("/api/v1/me/").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at > earlier


def test_the_migration_hashes_legacy_tokens_which_keep_working(labeler):
    legacy, _ = Token.objects.get_or_create(user=labeler)
    ApiToken.objects.all().delete()
    migration = importlib.import_module("labelers.migrations.0004_api_tokens_from_authtoken")
    # It only reads the editor's connection (a real editor cannot open inside the test's transaction on SQLite).
    migration.forwards(apps, SimpleNamespace(connection=connection))
    assert not Token.objects.exists()
    token = ApiToken.objects.get(user=labeler)
    assert (token.digest, token.prefix, token.name) == (
        hashlib.sha256(legacy.key.encode()).hexdigest(),
        legacy.key[:8],
        "migrated",
    )
    assert token.created_at == legacy.created
    me = _client(legacy.key).get("/api/v1/me/")
    assert (me.status_code, me.json()["username"]) == (200, "lena")
