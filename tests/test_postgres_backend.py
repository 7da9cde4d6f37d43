"""The PostgreSQL backend (``config.postgresql``): a health check without a round trip, and the
prepared statements of the labeling hot path. Real connections, real server."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from rest_framework.test import APIClient

from annotation.services import assignment_lease_next, ranking_submit
from labelers.models import Role
from labelers.tokens import api_token_create
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = [pytest.mark.django_db(transaction=True), postgres_only()]


def _terminate_my_backend() -> None:
    """End this test's server connection from another one, as a restart or an admin would."""
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The server's goodbye reaches the socket a moment later.
    deadline = time.monotonic() + 5
    while connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_engine_is_the_projects_backend():
    assert settings.DATABASES["default"]["ENGINE"] == "config.postgresql"


def test_a_live_connection_is_usable_and_a_terminated_one_is_not():
    connection.ensure_connection()
    assert connection.is_usable()
    with transaction.atomic():  # inside a transaction only a query can tell: it still answers
        assert connection.is_usable()
    _terminate_my_backend()
    assert not connection.is_usable()
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


def test_a_request_after_the_server_dropped_the_connection_is_answered(settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    user = UserFactory(role=Role.LABELER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)[1]}")
    assert client.get("/api/v1/me/").status_code == 200
    connection.ensure_connection()
    _terminate_my_backend()
    # What the request_started signal does; the test client leaves it out around its requests.
    close_old_connections()
    answer = client.get("/api/v1/me/")
    assert (answer.status_code, answer.json()["username"]) == (200, user.username)


def test_the_hot_path_statements_are_prepared_on_the_server():
    project = ProjectFactory(k=2, overlap=1)
    for _ in range(4):
        response_set_create(project=project)
    labeler = UserFactory(role=Role.LABELER)
    for n in range(4):
        lease = assignment_lease_next(project=project, labeler=labeler)
        first, second = lease.display_order
        ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key=f"k{n}", ranks={first: 1, second: 2})
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("FOR NO KEY UPDATE OF s SKIP LOCKED" in statement for statement in prepared)
    assert any(statement.lstrip().startswith("WITH claimed AS") for statement in prepared)
