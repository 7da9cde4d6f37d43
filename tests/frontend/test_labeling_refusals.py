"""The ranking page's submit decides before it writes: a refused submit saves nothing, and an
accepted one is always answered as accepted, even when no next item can follow."""

from __future__ import annotations

import pytest

from annotation.models import Assignment, AssignmentStatus, Ranking
from annotation.services import assignment_lease_next, guideline_publish, project_update
from labelers.models import LabelerStatus
from labelers.services import user_update
from quality.services import response_set_make_gold
from tests.factories import ProjectFactory, response_set_create
from tests.frontend.conftest import post_json

pytestmark = pytest.mark.django_db


def _ranks(assignment: Assignment) -> dict[str, int]:
    return {str(pk): i + 1 for i, pk in enumerate(assignment.display_order)}


def test_a_labeler_paused_after_the_lease_is_refused_and_nothing_is_saved(browser, labeler, project):
    response_set_create(project=project)
    lease = assignment_lease_next(project=project, labeler=labeler)
    user_update(user=labeler, status=LabelerStatus.PAUSED, status_reason="quality review", actor=None)
    status, answer = post_json(
        browser, f"/work/assignments/{lease.pk}/submit/", {"idempotency_key": "k", "ranks": _ranks(lease)}
    )
    assert (status, answer) == (403, {"detail": "Your account is paused (quality review).", "code": "labeler_paused"})
    assert not Ranking.objects.exists()
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.LEASED


def test_a_submit_on_a_project_deactivated_after_the_lease_is_refused(browser, labeler, project):
    response_set_create(project=project)
    lease = assignment_lease_next(project=project, labeler=labeler)
    project_update(project=project, is_active=False)
    status, answer = post_json(
        browser, f"/work/assignments/{lease.pk}/submit/", {"idempotency_key": "k", "ranks": _ranks(lease)}
    )
    assert (status, answer) == (409, {"detail": f"Project '{project.name}' is not active.", "code": "project_inactive"})
    assert not Ranking.objects.exists()


def test_an_accepted_submit_is_a_success_even_when_no_next_item_may_follow(browser, labeler):
    """A failed qualification stops the next lease; the ranking that settled it was saved, and the
    answer says so (200) instead of a 403 that would make the page offer to send it again."""
    project = ProjectFactory(k=2, overlap=1, qualification_items=1, qualification_threshold=1.0)
    response_set_create(project=project)
    gold = response_set_create(project=project, texts=["good", "bad"])
    by_text = dict(gold.responses.values_list("text", "id"))
    response_set_make_gold(response_set=gold, ranks={str(by_text["good"]): 1, str(by_text["bad"]): 2}, actor=None)
    lease = assignment_lease_next(project=project, labeler=labeler)
    assert lease.response_set_id == gold.pk
    wrong = {str(by_text["good"]): 2, str(by_text["bad"]): 1}
    url = f"/work/assignments/{lease.pk}/submit/"
    status, answer = post_json(browser, url, {"idempotency_key": "k", "ranks": wrong})
    message = f"You did not qualify for '{project.name}' (gold accuracy 0%, 100% needed). An admin can let you in."
    assert status == 200
    assert (answer["submitted"], answer["ranking_id"], answer["assignment_id"]) == (
        lease.pk,
        Ranking.objects.get().pk,
        None,
    )
    assert (answer["detail"], answer["code"]) == (message, "not_qualified")
    assert "Your ranking was saved." in answer["html"] and message.replace("'", "&#x27;") in answer["html"]
    # The page resending it (a lost answer) gets the same success, with the same ranking.
    status, again = post_json(browser, url, {"idempotency_key": "k", "ranks": wrong})
    assert (status, again["ranking_id"]) == (200, answer["ranking_id"])
    assert Ranking.objects.count() == 1


def test_the_guideline_page_of_an_inactive_project_is_not_found(browser, admin_user, project):
    guideline_publish(project=project, body="Rank them.", published_by=admin_user)
    project_update(project=project, is_active=False)
    page = browser.get(f"/work/{project.pk}/guideline/")
    assert page.status_code == 404 and f"Project {project.pk} not found." in page.content.decode()
    assert browser.post(f"/work/{project.pk}/guideline/").status_code == 404
    assert not project.current_guideline.acknowledgements.exists()
