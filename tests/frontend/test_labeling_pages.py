"""The labeler's pages through Django's test client: exact statuses, texts and rows."""

from __future__ import annotations

import pytest
from django.test import Client

from annotation.models import Assignment, AssignmentStatus, Ranking
from annotation.services import guideline_acknowledge, guideline_publish
from labelers.models import LabelerStatus
from tests.factories import PromptFactory, response_set_create
from tests.frontend.conftest import post_json

pytestmark = pytest.mark.django_db


def test_anonymous_user_is_sent_to_login(project):
    response = Client().get(f"/work/{project.pk}/")
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/work/{project.pk}/"


def test_login_page_renders_and_logs_in(labeler):
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "lena", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_unacknowledged_guideline_redirects_then_acknowledging_opens_the_item(browser, labeler, project, admin_user):
    guideline_publish(project=project, body="# Rules\nRank **helpfulness** first.", published_by=admin_user)
    response_set_create(project=project)
    response = browser.get(f"/work/{project.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/work/{project.pk}/guideline/"
    page = browser.get(f"/work/{project.pk}/guideline/").content.decode()
    assert "<strong>helpfulness</strong>" in page and "I have read version 1" in page
    assert browser.post(f"/work/{project.pk}/guideline/")["Location"] == f"/work/{project.pk}/"
    page = browser.get(f"/work/{project.pk}/").content.decode()
    assert Assignment.objects.filter(labeler=labeler, status=AssignmentStatus.LEASED).count() == 1
    assert 'id="item-data"' in page and "Guideline v1" in page


def test_ranking_page_shows_cards_in_display_order_and_escapes_html(browser, labeler, project):
    prompt = PromptFactory(
        project=project,
        text="",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say `hi`"}],
    )
    response_set_create(
        project=project, prompt=prompt, texts=["<script>alert(1)</script>", "**bold**", "```py\nx = 1\n```", "plain"]
    )
    page = browser.get(f"/work/{project.pk}/").content.decode()
    assignment = Assignment.objects.get(labeler=labeler)
    positions = [page.index(f'data-response-id="{pk}"') for pk in assignment.display_order]
    assert positions == sorted(positions)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>bold</strong>" in page and '<code class="language-py">x = 1' in page
    assert "Be brief." in page and "<code>hi</code>" in page


def test_submit_creates_one_ranking_for_a_double_submit_and_returns_the_next_item(browser, labeler, project):
    first = response_set_create(project=project)
    second = response_set_create(project=project)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    ids = [int(pk) for pk in assignment.display_order]
    body = {
        "idempotency_key": "key-1",
        "ranks": {str(ids[0]): 1, str(ids[1]): 1, str(ids[2]): 2, str(ids[3]): 3},
        "time_spent_ms": 4200,
    }
    url = f"/work/assignments/{assignment.pk}/submit/"
    status, answer = post_json(browser, url, body)
    assert status == 200 and answer["submitted"] == assignment.pk
    status_again, answer_again = post_json(browser, url, body)
    assert status_again == 200 and answer_again["ranking_id"] == answer["ranking_id"]
    assert Ranking.objects.filter(labeler=labeler).count() == 1
    ranking = Ranking.objects.get(labeler=labeler)
    assert ranking.response_set_id == first.pk and ranking.time_spent_ms == 4200
    assert ranking.comparisons.filter(outcome="tie").count() == 1
    next_assignment = Assignment.objects.get(labeler=labeler, status=AssignmentStatus.LEASED)
    assert next_assignment.response_set_id == second.pk and answer["assignment_id"] == next_assignment.pk
    assert f'data-assignment-id="{next_assignment.pk}"' in answer["html"]


def test_incomplete_ranking_is_refused_with_the_service_message(browser, labeler, project):
    response_set_create(project=project)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    first = assignment.display_order[0]
    status, answer = post_json(
        browser, f"/work/assignments/{assignment.pk}/submit/", {"idempotency_key": "k", "ranks": {str(first): 1}}
    )
    missing = assignment.display_order[1]
    assert status == 400
    assert answer == {
        "detail": f"ranks: response {missing} has no rank; every response of the set needs one.",
        "code": "incomplete",
        "errors": [
            {"field": "ranks", "message": f"response {missing} has no rank; every response of the set needs one."}
        ],
    }
    assert not Ranking.objects.exists()


def test_skip_needs_a_reason_and_then_shows_no_more_work(browser, labeler, project):
    response_set_create(project=project)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    url = f"/work/assignments/{assignment.pk}/skip/"
    assert post_json(browser, url, {"reason": " "}) == (
        400,
        {"detail": "reason: say why you skip this item.", "code": "invalid"},
    )
    status, answer = post_json(browser, url, {"reason": "The prompt is unclear or broken"})
    assert status == 200 and answer["assignment_id"] is None
    assert "No more work in" in answer["html"]
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.SKIPPED and assignment.skip_reason == "The prompt is unclear or broken"


def test_expired_session_answers_401_json_and_json_login_restores_it(labeler, project):
    response_set_create(project=project)
    client = Client(enforce_csrf_checks=True)
    token = client.get("/session/csrf/").json()["csrf"]
    response = client.post("/work/assignments/1/submit/", "{}", content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Your session has expired. Log in again to send your work.",
        "code": "not_authenticated",
    }
    wrong = client.post("/session/login/", {"username": "lena", "password": "nope"}, HTTP_X_CSRFTOKEN=token)
    assert wrong.status_code == 400 and wrong.json()["detail"] == "Wrong username or password."
    ok = client.post(
        "/session/login/", {"username": "lena", "password": "correct-horse-battery"}, HTTP_X_CSRFTOKEN=token
    )
    assert ok.status_code == 200 and ok.json()["username"] == "lena"
    assert client.get("/session/csrf/").json()["authenticated"] is True


def test_no_more_work_page(browser, project):
    page = browser.get(f"/work/{project.pk}/").content.decode()
    assert 'id="no-more-work"' in page and f"No more work in {project.name}" in page


def test_paused_labeler_gets_403_with_reason(browser, labeler, project):
    labeler.profile.status = LabelerStatus.PAUSED
    labeler.profile.status_reason = "quality review"
    labeler.profile.save()
    response = browser.get(f"/work/{project.pk}/")
    assert response.status_code == 403
    assert "Your account is paused (quality review)." in response.content.decode()


def test_new_guideline_version_stops_the_labeler_after_submit(browser, labeler, project, admin_user):
    v1 = guideline_publish(project=project, body="v1", published_by=admin_user)
    guideline_acknowledge(guideline=v1, user=labeler)
    response_set_create(project=project)
    response_set_create(project=project)
    browser.get(f"/work/{project.pk}/")
    assignment = Assignment.objects.get(labeler=labeler)
    guideline_publish(project=project, body="v2", published_by=admin_user)
    ranks = {str(pk): position + 1 for position, pk in enumerate(assignment.display_order)}
    status, answer = post_json(
        browser, f"/work/assignments/{assignment.pk}/submit/", {"idempotency_key": "a", "ranks": ranks}
    )
    assert status == 200 and answer["redirect"] == f"/work/{project.pk}/guideline/"
    assert Ranking.objects.get().guideline_id == v1.pk


def test_admin_cannot_open_the_ranking_page(admin_user, project):
    client = Client()
    client.force_login(admin_user)
    response = client.get(f"/work/{project.pk}/")
    assert response.status_code == 403 and "Only labelers use this page." in response.content.decode()
