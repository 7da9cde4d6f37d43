"""Data steps of migrations, run on rows like those a live database holds."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.db import connection, transaction

from annotation.models import Ranking
from annotation.services import assignment_lease_next, ranking_submit
from tests.factories import ProjectFactory, response_set_create

pytestmark = pytest.mark.django_db


def _ranked(project, labeler, key: str) -> Ranking:
    response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    ids = list(assignment.response_set.responses.values_list("id", flat=True))
    ranking, _ = ranking_submit(
        assignment_id=assignment.pk,
        labeler=labeler,
        idempotency_key=key,
        ranks={str(pk): rank for rank, pk in enumerate(ids, start=1)},
    )
    return ranking


def test_0007_gives_every_ranking_its_sets_project(labeler):
    first, second = ProjectFactory(k=2, overlap=1), ProjectFactory(k=2, overlap=1)
    rankings = [_ranked(first, labeler, "a"), _ranked(second, labeler, "b"), _ranked(first, labeler, "c")]
    # Rows as they were before the column existed: no project of their own (here: the wrong one).
    Ranking.objects.update(project_id=second.pk)
    migration = importlib.import_module("annotation.migrations.0007_ranking_project_scoped_idempotency_key")

    def execute(sql: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    with transaction.atomic():
        migration.fill_project(apps, SimpleNamespace(connection=connection, execute=execute))
    filled = dict(Ranking.objects.values_list("pk", "project_id"))
    assert filled == {
        rankings[0].pk: first.pk,
        rankings[1].pk: second.pk,
        rankings[2].pk: first.pk,
    }
