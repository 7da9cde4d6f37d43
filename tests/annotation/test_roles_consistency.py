"""A pause or a deactivated project stops leases, submits and skips alike; guidelines are visible
exactly where their project is; idempotency keys are scoped to the labeler and the project."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from annotation.models import Assignment, AssignmentStatus, Comparison, Ranking, ResponseSet
from annotation.services import (
    assignment_lease_next,
    guideline_publish,
    project_update,
    ranking_submit,
)
from annotation.services import ranking as ranking_service
from labelers.models import LabelerProfile, LabelerStatus
from labelers.services import user_update
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, response_set_create

pytestmark = pytest.mark.django_db

PAUSED = {"detail": "Your account is paused (quality review).", "code": "labeler_paused"}


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def _ranks(assignment: Assignment) -> dict[str, int]:
    return {str(pk): i + 1 for i, pk in enumerate(assignment.display_order)}


@pytest.fixture
def leased(labeler, project):
    response_set_create(project=project)
    response_set_create(project=project)
    return assignment_lease_next(project=project, labeler=labeler)


def _pause(user) -> None:
    user_update(user=user, status=LabelerStatus.PAUSED, status_reason="quality review", actor=None)


def _nothing_written(assignment: Assignment) -> None:
    assert not Ranking.objects.exists() and not Comparison.objects.exists()
    assert Assignment.objects.get(pk=assignment.pk).status == AssignmentStatus.LEASED
    assert ResponseSet.objects.get(pk=assignment.response_set_id).submitted_count == 0


# --- 1. a pause and a deactivation stop leases, submits and skips ---------------------------------


def test_a_paused_labeler_cannot_submit_the_lease_they_hold(labeler, leased):
    _pause(labeler)
    answer = _client(labeler).post(
        f"/api/v1/assignments/{leased.pk}/submit/", {"idempotency_key": "k", "ranks": _ranks(leased)}, format="json"
    )
    assert (answer.status_code, answer.json()) == (403, PAUSED)
    _nothing_written(leased)


def test_a_paused_labeler_cannot_skip_or_lease(labeler, project, leased):
    _pause(labeler)
    client = _client(labeler)
    skip = client.post(f"/api/v1/assignments/{leased.pk}/skip/", {"reason": "unclear"}, format="json")
    assert (skip.status_code, skip.json()) == (403, PAUSED)
    lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert (lease.status_code, lease.json()) == (403, PAUSED)
    _nothing_written(leased)


def test_submits_and_skips_on_a_deactivated_project_are_refused(labeler, project, leased):
    project_update(project=project, is_active=False)
    client = _client(labeler)
    inactive = {"detail": f"Project '{project.name}' is not active.", "code": "project_inactive"}
    submit = client.post(
        f"/api/v1/assignments/{leased.pk}/submit/", {"idempotency_key": "k", "ranks": _ranks(leased)}, format="json"
    )
    assert (submit.status_code, submit.json()) == (409, inactive)
    skip = client.post(f"/api/v1/assignments/{leased.pk}/skip/", {"reason": "unclear"}, format="json")
    assert (skip.status_code, skip.json()) == (409, inactive)
    _nothing_written(leased)


def test_a_submit_accepted_before_a_pause_is_answered_as_accepted_when_repeated(labeler, leased):
    client = _client(labeler)
    body = {"idempotency_key": "k", "ranks": _ranks(leased)}
    first = client.post(f"/api/v1/assignments/{leased.pk}/submit/", body, format="json")
    _pause(labeler)
    again = client.post(f"/api/v1/assignments/{leased.pk}/submit/", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False


@postgres_only()
def test_a_pause_committed_between_the_read_and_the_write_writes_nothing(labeler, leased, monkeypatch):
    """The unlocked submit's claim checks the labeler's status itself: a pause landing after the
    read makes it claim nothing, and the locked path then refuses with the reason."""
    clean = ranking_service._clean

    def pause_then_clean(**kwargs):
        LabelerProfile.objects.filter(user=labeler).update(status=LabelerStatus.PAUSED, status_reason="quality review")
        return clean(**kwargs)

    monkeypatch.setattr(ranking_service, "_clean", pause_then_clean)
    with pytest.raises(ranking_service.ApplicationError) as exc:
        ranking_submit(assignment_id=leased.pk, labeler=labeler, idempotency_key="k", ranks=_ranks(leased))
    assert (exc.value.status, exc.value.as_body()) == (403, PAUSED)
    _nothing_written(leased)


# --- 4. guidelines follow their project's visibility ----------------------------------------------


def test_guidelines_of_an_inactive_project_are_not_found_for_labelers(labeler, admin_user, project):
    guideline_publish(project=project, body="Rank them.", published_by=admin_user)
    project_update(project=project, is_active=False)
    client = _client(labeler)
    not_found = {"detail": f"Project {project.pk} not found.", "code": "not_found"}
    base = f"/api/v1/projects/{project.pk}"
    for answer in (
        client.get(f"{base}/"),
        client.get(f"{base}/guidelines/"),
        client.get(f"{base}/guidelines/1/"),
        client.post(f"{base}/guidelines/1/acknowledge/"),
    ):
        assert (answer.status_code, answer.json()) == (404, not_found)
    assert not project.current_guideline.acknowledgements.exists()
    # Admins still see and read them.
    assert _client(admin_user).get(f"{base}/guidelines/1/").status_code == 200


def test_guidelines_of_an_active_project_stay_readable_by_labelers(labeler, admin_user, project):
    guideline_publish(project=project, body="Rank them.", published_by=admin_user)
    client = _client(labeler)
    assert client.get(f"/api/v1/projects/{project.pk}/guidelines/1/").json()["body"] == "Rank them."
    assert client.post(f"/api/v1/projects/{project.pk}/guidelines/1/acknowledge/").status_code == 200


# --- 5. idempotency keys are scoped to the labeler and the project --------------------------------


def test_one_key_can_be_used_once_in_each_project(labeler):
    projects = [ProjectFactory(k=2, overlap=1), ProjectFactory(k=2, overlap=1)]
    client = _client(labeler)
    answers = []
    for project in projects:
        response_set_create(project=project)
        lease = assignment_lease_next(project=project, labeler=labeler)
        body = {"idempotency_key": "same-key", "ranks": _ranks(lease)}
        answers.append(client.post(f"/api/v1/assignments/{lease.pk}/submit/", body, format="json"))
    assert [answer.status_code for answer in answers] == [201, 201]
    assert [r.project_id for r in Ranking.objects.order_by("id")] == [p.pk for p in projects]


def test_in_one_project_a_key_repeats_its_first_ranking_and_refuses_another_assignment(labeler, project):
    response_set_create(project=project)
    response_set_create(project=project)
    client = _client(labeler)
    first_lease = assignment_lease_next(project=project, labeler=labeler)
    url = f"/api/v1/assignments/{first_lease.pk}/submit/"
    first = client.post(url, {"idempotency_key": "k", "ranks": _ranks(first_lease)}, format="json")
    other_ranks = {pk: 1 for pk in _ranks(first_lease)}
    repeat = client.post(url, {"idempotency_key": "k", "ranks": other_ranks}, format="json")
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.json()["id"] == first.json()["id"] and repeat.json()["ranks"] == first.json()["ranks"]

    second_lease = assignment_lease_next(project=project, labeler=labeler)
    reused = client.post(
        f"/api/v1/assignments/{second_lease.pk}/submit/",
        {"idempotency_key": "k", "ranks": _ranks(second_lease)},
        format="json",
    )
    assert (reused.status_code, reused.json()) == (
        409,
        {"detail": "idempotency_key: already used for another assignment.", "code": "idempotency_key_reused"},
    )
    assert Ranking.objects.count() == 1


def test_the_database_refuses_a_key_twice_in_one_project_only(labeler, project):
    other = ProjectFactory(k=4, overlap=3)
    leases = []
    for target in (project, project, other):
        response_set_create(project=target)
        leases.append(assignment_lease_next(project=target, labeler=labeler))
    ranking_submit(assignment_id=leases[0].pk, labeler=labeler, idempotency_key="k", ranks=_ranks(leases[0]))

    def insert(lease: Assignment, project_id: int) -> Ranking:
        return Ranking.objects.create(
            assignment=lease,
            response_set_id=lease.response_set_id,
            project_id=project_id,
            labeler=labeler,
            ranks=_ranks(lease),
            display_order=lease.display_order,
            idempotency_key="k",
        )

    with pytest.raises(IntegrityError, match=r"(?i)unique"), transaction.atomic():
        insert(leases[1], project.pk)
    insert(leases[2], other.pk)
    assert Ranking.objects.filter(labeler=labeler, idempotency_key="k").count() == 2
