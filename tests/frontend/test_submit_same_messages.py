"""The page and the API read a submit body through one function: the same mistake, the same answer."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotation.models import Assignment, Ranking
from labelers.tokens import api_token_create
from tests.factories import response_set_create
from tests.frontend.conftest import post_json

pytestmark = pytest.mark.django_db


def _both(browser, labeler, assignment, body):
    page = post_json(browser, f"/work/assignments/{assignment.pk}/submit/", body)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=labeler)[1]}")
    answer = api.post(f"/api/v1/assignments/{assignment.pk}/submit/", body, format="json")
    return page, (answer.status_code, answer.json())


@pytest.mark.parametrize(
    ("bad", "detail", "code"),
    [
        ("gap", "ranks: ranks must be dense (1, 2, 3, ... with ties sharing a rank and no gaps); got 1, 3.", "invalid"),
        ("missing_key", "idempotency_key: This field is required.", "invalid"),
        ("null_time", "time_spent_ms: must be a non-negative whole number.", "invalid"),
    ],
)
def test_the_same_bad_submit_gets_the_same_message_from_the_page_and_the_api(
    browser, labeler, project, bad, detail, code
):
    response_set_create(project=project)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    order = assignment.display_order
    body = {"idempotency_key": "k-1", "ranks": {str(pk): 1 for pk in order}, "comment": None, "time_spent_ms": 12.0}
    if bad == "gap":
        body["ranks"] = {str(pk): 1 if i == 0 else 3 for i, pk in enumerate(order)}
    elif bad == "missing_key":
        del body["idempotency_key"]
    else:
        body["time_spent_ms"] = None
    (page_status, page_body), (api_status, api_body) = _both(browser, labeler, assignment, body)
    assert (page_status, page_body["detail"], page_body["code"]) == (400, detail, code)
    assert (api_status, api_body["detail"], api_body["code"]) == (400, detail, code)
    assert Ranking.objects.count() == 0
