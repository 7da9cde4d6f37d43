"""The password-reset page says when no email can be sent, instead of showing "done"."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client

from frontend.views.accounts import NO_EMAIL


@pytest.fixture
def lena(make_user):
    return make_user(username="lena", email="lena@example.com", password="correct-horse-battery")


@pytest.mark.django_db
def test_without_email_configured_the_page_says_so(settings, lena):
    settings.EMAIL_ENABLED = False
    response = Client().post("/accounts/password_reset/", {"email": "lena@example.com"})
    assert response.status_code == 503
    assert NO_EMAIL in response.content.decode()
    assert mail.outbox == []


@pytest.mark.django_db
def test_a_failed_send_is_reported_not_hidden(settings, lena, monkeypatch):
    settings.EMAIL_ENABLED = True

    def refuse(self, *args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("django.core.mail.backends.locmem.EmailBackend.send_messages", refuse)
    response = Client().post("/accounts/password_reset/", {"email": "lena@example.com"})
    assert response.status_code == 503
    assert "The email could not be sent (ConnectionRefusedError: [Errno 111] Connection refused)." in (
        response.content.decode()
    )


@pytest.mark.django_db
def test_a_sent_email_goes_on_to_done(settings, lena):
    settings.EMAIL_ENABLED = True
    response = Client().post("/accounts/password_reset/", {"email": "lena@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1 and "/accounts/reset/" in mail.outbox[0].body
