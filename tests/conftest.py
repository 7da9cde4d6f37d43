from __future__ import annotations

import socket
import tempfile

import pytest
from rest_framework.test import APIClient

from annotation.models import Project
from labelers.models import Role
from tests.factories import ProjectFactory, UserFactory


@pytest.fixture
def make_user(db):
    def make(role: str = Role.LABELER, **kwargs):
        return UserFactory(role=role, **kwargs)

    return make


@pytest.fixture
def labeler(make_user):
    return make_user(Role.LABELER, username="lena")


@pytest.fixture
def admin_user(make_user):
    return make_user(Role.ADMIN, username="ada")


@pytest.fixture
def ml_engineer(make_user):
    return make_user(Role.ML_ENGINEER, username="emil")


@pytest.fixture
def client_for():
    def make(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def project(db) -> Project:
    return ProjectFactory(k=4, overlap=3)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The default PBKDF2 costs ~0.3 s per user on this machine; the tests make many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Tests that want the worker-side agreement refresh turn it on themselves.
    settings.QUALITY_REFRESH_ON_SUBMIT = False
    # Tests build their models in temporary directories; the rule itself is tested with its own roots.
    settings.MODEL_ROOTS = [*settings.MODEL_ROOTS, tempfile.gettempdir()]


def postgres_only():
    from django.db import connection

    return pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (set DATABASE_URL)")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """A tiny policy and reward model built offline once per session (seconds): paths that model
    registration accepts, for tests about something else."""
    from rlhf.training.tiny import build_tiny_policy, build_tiny_reward_model, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "policy": build_tiny_policy(root / "policy", tokenizer=tokenizer),
        "reward": build_tiny_reward_model(root / "reward", tokenizer=tokenizer),
    }


def free_port() -> int:
    """A TCP port nothing listens on now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
