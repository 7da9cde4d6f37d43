"""Inviting people over the API: with a password, or without one (they set it from the reset link)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db


def test_invite_without_a_password_creates_a_user_with_an_unusable_password(client_for, admin_user):
    response = client_for(admin_user).post(
        "/api/v1/users/", {"username": "nina", "email": "nina@example.com"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["username"], body["email"], body["role"]) == ("nina", "nina@example.com", "labeler")
    user = get_user_model().objects.get(username="nina")
    assert user.pk == body["id"] and not user.has_usable_password()


def test_invite_with_a_password_can_log_in(client_for, admin_user):
    response = client_for(admin_user).post(
        "/api/v1/users/", {"username": "omar", "password": "long-enough-1", "role": "ml_engineer"}, format="json"
    )
    assert response.status_code == 201 and response.json()["role"] == "ml_engineer"
    token = client_for(None).post("/api/v1/auth/token/", {"username": "omar", "password": "long-enough-1"})
    assert token.status_code == 200 and token.json()["token"]


def test_invite_with_a_short_password_is_a_400(client_for, admin_user):
    response = client_for(admin_user).post("/api/v1/users/", {"username": "pia", "password": "short"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "password: Ensure this field has at least 8 characters.",
        "code": "invalid",
        "errors": [{"field": "password", "message": "Ensure this field has at least 8 characters."}],
    }
    assert not get_user_model().objects.filter(username="pia").exists()
