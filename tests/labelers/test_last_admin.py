"""The last active admin cannot be demoted or paused: someone must be left to manage the platform."""

from __future__ import annotations

import pytest

from labelers.models import LabelerProfile, LabelerStatus, Role

pytestmark = pytest.mark.django_db


def _last_admin(username: str) -> dict:
    return {
        "detail": f"'{username}' is the only active admin; make another user an admin before demoting or pausing them.",
        "code": "last_admin",
    }


@pytest.mark.parametrize("change", [{"role": Role.LABELER}, {"role": Role.ML_ENGINEER}, {"status": "paused"}])
def test_the_only_admin_cannot_demote_or_pause_themselves(client_for, admin_user, change):
    answer = client_for(admin_user).patch(f"/api/v1/users/{admin_user.pk}/", change, format="json")
    assert (answer.status_code, answer.json()) == (409, _last_admin("ada"))
    profile = LabelerProfile.objects.get(user=admin_user)
    assert (profile.role, profile.status) == (Role.ADMIN, LabelerStatus.ACTIVE)
    admin_user.refresh_from_db()
    assert admin_user.is_staff


def test_a_paused_admin_does_not_count_as_the_one_left(client_for, admin_user, make_user):
    other = make_user(Role.ADMIN, username="otto")
    LabelerProfile.objects.filter(user=other).update(status=LabelerStatus.PAUSED)
    answer = client_for(admin_user).patch(f"/api/v1/users/{admin_user.pk}/", {"role": "labeler"}, format="json")
    assert (answer.status_code, answer.json()) == (409, _last_admin("ada"))


def test_with_another_active_admin_the_demotion_goes_through(client_for, admin_user, make_user):
    make_user(Role.ADMIN, username="otto")
    answer = client_for(admin_user).patch(f"/api/v1/users/{admin_user.pk}/", {"role": "labeler"}, format="json")
    assert (answer.status_code, answer.json()["role"]) == (200, "labeler")
    assert LabelerProfile.objects.get(user=admin_user).role == Role.LABELER


def test_other_changes_to_the_only_admin_and_to_labelers_are_allowed(client_for, admin_user, labeler):
    client = client_for(admin_user)
    same = client.patch(f"/api/v1/users/{admin_user.pk}/", {"role": "admin", "status": "active"}, format="json")
    paused = client.patch(f"/api/v1/users/{labeler.pk}/", {"status": "paused"}, format="json")
    assert (same.status_code, paused.status_code) == (200, 200)
