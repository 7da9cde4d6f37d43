"""Fixtures of the browser-page tests."""

from __future__ import annotations

import json

import pytest
from django.test import Client


@pytest.fixture
def browser(labeler) -> Client:
    """A logged-in labeler's browser session."""
    client = Client()
    client.force_login(labeler)
    return client


def post_json(client: Client, url: str, body: dict) -> tuple[int, dict]:
    """POST a JSON body as the pages' scripts do; (status, JSON answer)."""
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()
