"""Leasing: nearest completion first, never twice to one labeler, overlap, expiry, skip, late submit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, AssignmentStatus, Ranking, ResponseSetStatus
from annotation.services import assignment_lease_next, assignment_skip, leases_expire, ranking_submit
from config.exceptions import ApplicationError, Conflict
from labelers.models import Role
from labelers.services import user_update
from tests.factories import ProjectFactory, response_set_create

pytestmark = pytest.mark.django_db


def _submit(assignment, labeler, key=None):
    ranks = {pk: i + 1 for i, pk in enumerate(assignment.display_order)}
    return ranking_submit(
        assignment_id=assignment.pk, labeler=labeler, idempotency_key=key or f"k{assignment.pk}", ranks=ranks
    )


def _expire(assignment):
    Assignment.objects.filter(pk=assignment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def test_display_order_is_a_permutation_of_the_set(labeler, project):
    response_set = response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    assert sorted(assignment.display_order) == sorted(response_set.items.values_list("response_id", flat=True))
    assert assignment.expires_at - assignment.leased_at == timedelta(minutes=project.lease_minutes)


def test_a_labeler_holding_a_lease_gets_the_same_one_back(labeler, project):
    response_set_create(project=project)
    response_set_create(project=project)
    first = assignment_lease_next(project=project, labeler=labeler)
    again = assignment_lease_next(project=project, labeler=labeler)
    assert again.pk == first.pk
    assert Assignment.objects.count() == 1


def test_sets_nearest_completion_come_first(make_user, project):
    older, newer = response_set_create(project=project), response_set_create(project=project)
    first = make_user()
    assignment = assignment_lease_next(project=project, labeler=first)
    assert assignment.response_set_id == older.pk
    # Let the newer set collect a submission: it is now nearest completion.
    other = make_user()
    Assignment.objects.filter(pk=assignment.pk).delete()
    lease = assignment_lease_next(project=project, labeler=other)
    assert lease.response_set_id == older.pk
    _submit(lease, other)
    lease_newer = assignment_lease_next(project=project, labeler=other)
    assert lease_newer.response_set_id == newer.pk
    _submit(lease_newer, other)
    third = make_user()
    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.submitted_count, newer.submitted_count) == (1, 1)
    _submit(assignment_lease_next(project=project, labeler=third), third)  # takes older (tie on count -> lower id)
    fourth = make_user()
    assert assignment_lease_next(project=project, labeler=fourth).response_set_id == older.pk


def test_never_the_same_set_twice_to_one_labeler(labeler, project):
    only = response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    _submit(assignment, labeler)
    assert assignment_lease_next(project=project, labeler=labeler) is None
    only.refresh_from_db()
    assert only.submitted_count == 1 and only.status == ResponseSetStatus.OPEN


def test_overlap_is_never_exceeded_and_set_completes(make_user):
    project = ProjectFactory(k=3, overlap=2)
    response_set = response_set_create(project=project)
    a, b, c = make_user(), make_user(), make_user()
    lease_a = assignment_lease_next(project=project, labeler=a)
    lease_b = assignment_lease_next(project=project, labeler=b)
    assert lease_a.response_set_id == lease_b.response_set_id == response_set.pk
    assert assignment_lease_next(project=project, labeler=c) is None  # both slots leased
    _submit(lease_a, a)
    _submit(lease_b, b)
    response_set.refresh_from_db()
    assert response_set.status == ResponseSetStatus.COMPLETE
    assert response_set.submitted_count == 2
    assert assignment_lease_next(project=project, labeler=c) is None


def test_expired_lease_returns_to_the_pool(make_user):
    project = ProjectFactory(k=2, overlap=1)
    response_set = response_set_create(project=project)
    a, b = make_user(), make_user()
    lease_a = assignment_lease_next(project=project, labeler=a)
    assert assignment_lease_next(project=project, labeler=b) is None
    _expire(lease_a)
    lease_b = assignment_lease_next(project=project, labeler=b)
    assert lease_b is not None and lease_b.response_set_id == response_set.pk
    # A's late submit finds the only slot taken by B's live lease: 409, nothing written.
    with pytest.raises(Conflict) as exc:
        _submit(lease_a, a)
    assert exc.value.code == "lease_expired"
    assert exc.value.status == 409
    assert "already has the 1 rankings it needs; this ranking was not saved." in exc.value.message
    assert Ranking.objects.count() == 0
    assert leases_expire() == 1
    lease_a.refresh_from_db()
    assert lease_a.status == AssignmentStatus.EXPIRED


def test_late_submit_is_accepted_while_the_set_still_needs_it(make_user):
    project = ProjectFactory(k=2, overlap=2)
    response_set_create(project=project)
    a = make_user()
    lease_a = assignment_lease_next(project=project, labeler=a)
    _expire(lease_a)
    ranking, created = _submit(lease_a, a)
    assert created and ranking.submitted_late


def test_own_expired_lease_comes_back_renewed_with_the_same_order(labeler):
    project = ProjectFactory(k=4, overlap=1)
    response_set_create(project=project)
    lease = assignment_lease_next(project=project, labeler=labeler)
    _expire(lease)
    again = assignment_lease_next(project=project, labeler=labeler)
    assert again.pk == lease.pk
    assert again.display_order == lease.display_order
    assert again.status == AssignmentStatus.LEASED and again.expires_at > timezone.now()


def test_skip_frees_the_slot_and_is_never_offered_again(make_user):
    project = ProjectFactory(k=2, overlap=1)
    response_set = response_set_create(project=project)
    a, b = make_user(), make_user()
    lease = assignment_lease_next(project=project, labeler=a)
    with pytest.raises(ApplicationError) as exc:
        assignment_skip(assignment_id=lease.pk, labeler=a, reason="  ")
    assert exc.value.message == "reason: say why you skip this item."
    skipped = assignment_skip(assignment_id=lease.pk, labeler=a, reason="Not in a language I read")
    assert skipped.status == AssignmentStatus.SKIPPED and skipped.skip_reason == "Not in a language I read"
    assert assignment_lease_next(project=project, labeler=a) is None
    assert assignment_lease_next(project=project, labeler=b).response_set_id == response_set.pk
    with pytest.raises(Conflict) as exc:
        _submit(lease, a)
    assert exc.value.code == "already_skipped"


def test_someone_elses_assignment_is_not_found(make_user, project):
    response_set_create(project=project)
    a, b = make_user(), make_user()
    lease = assignment_lease_next(project=project, labeler=a)
    with pytest.raises(ApplicationError) as exc:
        _submit(lease, b)
    assert exc.value.status == 404
    assert exc.value.message == f"Assignment {lease.pk} not found."


def test_paused_labelers_and_other_roles_get_no_work(make_user, project):
    response_set_create(project=project)
    paused = make_user()
    user_update(user=paused, status="paused", status_reason="low gold accuracy", actor=None)
    with pytest.raises(ApplicationError) as exc:
        assignment_lease_next(project=project, labeler=paused)
    assert (exc.value.status, exc.value.code, exc.value.message) == (
        403,
        "labeler_paused",
        "Your account is paused (low gold accuracy).",
    )
    with pytest.raises(ApplicationError) as exc:
        assignment_lease_next(project=project, labeler=make_user(Role.ADMIN))
    assert exc.value.code == "not_a_labeler"
