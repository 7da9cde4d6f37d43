"""Role changes, pauses and resumptions each write one audit row: who, what, why, before and after;
the people page shows them; the admin can read them and not change them."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from labelers.models import Role
from labelers.services import user_update

pytestmark = pytest.mark.django_db


def _rows() -> list[tuple]:
    return list(
        AuditEntry.objects.order_by("id").values_list("actor_name", "action", "target", "reason", "before", "after")
    )


def test_a_pause_and_a_resume_through_the_api_are_recorded_with_who_and_why(client_for, admin_user, labeler):
    client = client_for(admin_user)
    paused = client.patch(
        f"/api/v1/users/{labeler.pk}/", {"status": "paused", "status_reason": "gold accuracy 40%"}, format="json"
    )
    resumed = client.patch(f"/api/v1/users/{labeler.pk}/", {"status": "active"}, format="json")
    assert (paused.status_code, resumed.status_code) == (200, 200)
    target = f"auth.user:{labeler.pk}"
    assert _rows() == [
        (
            "ada",
            "labeler.pause",
            target,
            "gold accuracy 40%",
            {"status": "active", "reason": ""},
            {"status": "paused", "reason": "gold accuracy 40%"},
        ),
        (
            "ada",
            "labeler.resume",
            target,
            "",
            {"status": "paused", "reason": "gold accuracy 40%"},
            {"status": "active", "reason": ""},
        ),
    ]


def test_a_role_change_on_the_page_is_recorded_and_shown(client_for, admin_user, labeler, client):
    client.force_login(admin_user)
    answer = client.post(f"/manage/labelers/{labeler.pk}/", {"role": "ml_engineer", "status": "", "status_reason": ""})
    assert answer.status_code == 302
    role_change = ("ada", "user.role", f"auth.user:{labeler.pk}", "", {"role": "labeler"}, {"role": "ml_engineer"})
    assert _rows() == [role_change]
    page = client.get("/manage/labelers/").content.decode()
    assert "Role changed" in page and labeler.get_username() in page


def test_a_change_that_changes_nothing_or_is_refused_writes_no_row(client_for, admin_user, labeler):
    client = client_for(admin_user)
    assert client.patch(f"/api/v1/users/{labeler.pk}/", {"role": "labeler"}, format="json").status_code == 200
    refused = client.patch(f"/api/v1/users/{admin_user.pk}/", {"role": "labeler"}, format="json")
    assert refused.status_code == 409
    assert _rows() == []


def test_the_loop_is_the_actor_when_no_person_is(labeler):
    user_update(user=labeler, status="paused", status_reason="auto: reliability 0.40 is low.", actor=None)
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.who, entry.action) == (None, "the loop", "labeler.pause")


def test_the_admin_lists_entries_and_cannot_add_change_or_delete_them(admin_user, labeler, client):
    admin_user.is_superuser = True
    admin_user.save()
    user_update(user=labeler, role=Role.ML_ENGINEER, actor=admin_user)
    entry = AuditEntry.objects.get()
    client.force_login(admin_user)
    assert client.get("/admin/audit/auditentry/").status_code == 200
    assert client.get(f"/admin/audit/auditentry/{entry.pk}/change/").status_code == 200  # read-only view
    assert client.get("/admin/audit/auditentry/add/").status_code == 403
    assert client.post(f"/admin/audit/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.count() == 1
