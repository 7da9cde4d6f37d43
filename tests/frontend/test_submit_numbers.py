"""The ranking widget's submit with numbers JSON allows but a float cannot hold: a 400, never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Assignment, Ranking
from tests.factories import response_set_create

pytestmark = pytest.mark.django_db


def test_submit_with_time_spent_ms_out_of_float_range_is_a_400(labeler, project):
    response_set_create(project=project)
    browser = Client()
    browser.force_login(labeler)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    ranks = ", ".join(f'"{pk}": {rank}' for rank, pk in enumerate(assignment.display_order, start=1))
    body = f'{{"idempotency_key": "k-1", "ranks": {{{ranks}}}, "time_spent_ms": 1e400}}'
    response = browser.post(f"/work/assignments/{assignment.pk}/submit/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "The request body is not valid JSON: the number 1e400 is out of range.",
        "code": "invalid",
    }
    assert Ranking.objects.count() == 0
