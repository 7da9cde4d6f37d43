"""Brute-force protection: AXES_FAILURE_LIMIT wrong passwords lock a username from an address, on
every password login (API token, login page, the ranking page's re-login, the Django admin)."""

from __future__ import annotations

import pytest
from django.test import Client

MESSAGE = "Too many failed logins for this username from your address; logins are refused for 15 minutes."


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return 3


@pytest.mark.django_db
def test_the_token_endpoint_locks_after_the_limit_even_for_the_right_password(make_user, limit):
    make_user(username="lena", password="correct-horse-battery")
    client = Client()
    for _ in range(limit - 1):
        wrong = client.post(
            "/api/v1/auth/token/", {"username": "lena", "password": "nope"}, content_type="application/json"
        )
        assert wrong.status_code == 400
    locked = client.post(
        "/api/v1/auth/token/", {"username": "lena", "password": "nope"}, content_type="application/json"
    )
    assert locked.status_code == 429
    assert locked.json() == {"detail": MESSAGE, "code": "locked_out"}
    assert locked["Retry-After"] == "900"
    right = client.post(
        "/api/v1/auth/token/",
        {"username": "lena", "password": "correct-horse-battery"},
        content_type="application/json",
    )
    assert right.status_code == 429
    # Another address is not locked out by this one's failures.
    other = Client(REMOTE_ADDR="10.0.0.9").post(
        "/api/v1/auth/token/",
        {"username": "lena", "password": "correct-horse-battery"},
        content_type="application/json",
    )
    assert other.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_the_login_pages_lock_after_the_limit(make_user, limit, url):
    make_user(username="lena", password="correct-horse-battery")
    client = Client()
    for _ in range(limit):
        response = client.post(url, {"username": "lena", "password": "nope"})
    assert response.status_code == 429
    assert response.content.decode() == MESSAGE
    assert client.post(url, {"username": "lena", "password": "correct-horse-battery"}).status_code == 429


@pytest.mark.django_db
def test_the_ranking_pages_relogin_locks_after_the_limit(make_user, limit):
    make_user(username="lena", password="correct-horse-battery")
    client = Client()
    for _ in range(limit):
        response = client.post("/session/login/", {"username": "lena", "password": "nope"})
    assert response.status_code == 429
    assert response.json()["code"] == "locked_out"


@pytest.mark.django_db
def test_a_success_before_the_limit_resets_the_count(make_user, limit):
    make_user(username="lena", password="correct-horse-battery")
    client = Client()
    for _ in range(limit - 1):
        client.post("/api/v1/auth/token/", {"username": "lena", "password": "nope"}, content_type="application/json")
    ok = client.post(
        "/api/v1/auth/token/",
        {"username": "lena", "password": "correct-horse-battery"},
        content_type="application/json",
    )
    assert ok.status_code == 200
    for _ in range(limit - 1):
        wrong = client.post(
            "/api/v1/auth/token/", {"username": "lena", "password": "nope"}, content_type="application/json"
        )
        assert wrong.status_code == 400
