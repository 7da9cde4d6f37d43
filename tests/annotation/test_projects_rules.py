"""Project bounds and flag keys are the service's rules too, not only the serializer's and the form's;
publishing a guideline is a decision with its audit row."""

from __future__ import annotations

import pytest

from annotation.services import guideline_publish, project_create, project_update
from audit.models import AuditAction, AuditEntry
from config.exceptions import ApplicationError
from labelers.models import Role
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"overlap": 51}, "overlap", "must be at most 50, got 51."),
        ({"lease_minutes": 1441}, "lease_minutes", "must be at most 1440, got 1441."),
        ({"overlap": 0}, "overlap", "must be at least 1."),
        ({"qualification_items": 101}, "qualification_items", "must be at most 100, got 101."),
        (
            {"flags": [{"key": "Bad Key"}]},
            "flags[0]",
            "the key 'Bad Key' may hold only lower-case letters, digits and underscores (at most 50).",
        ),
    ],
)
def test_the_service_enforces_the_bounds_and_names_the_field(fields, field, message):
    with pytest.raises(ApplicationError) as exc:
        project_create(created_by=None, name="Bounded", **fields)
    assert (exc.value.status, exc.value.message, exc.value.errors) == (
        400,
        f"{field}: {message}",
        [{"field": field, "message": message}],
    )
    project = ProjectFactory()
    with pytest.raises(ApplicationError) as exc:
        project_update(project=project, **fields)
    assert exc.value.message == f"{field}: {message}"


def test_the_upper_bounds_themselves_are_allowed():
    project = project_create(created_by=None, name="Edge", overlap=50, lease_minutes=1440)
    assert (project.overlap, project.lease_minutes) == (50, 1440)


def test_publishing_a_guideline_writes_one_audit_row():
    admin = UserFactory(role=Role.ADMIN, username="editor")
    project = ProjectFactory()
    first = guideline_publish(project=project, body="v1", published_by=admin)
    second = guideline_publish(project=project, body="v2", note="Ties allowed", published_by=admin)
    entries = list(AuditEntry.objects.filter(action=AuditAction.GUIDELINE_PUBLISH).order_by("id"))
    assert [(e.actor, e.project, e.target, e.reason, e.before, e.after) for e in entries] == [
        (admin, project, f"annotation.guideline:{first.pk}", "", {"version": None}, {"version": 1}),
        (admin, project, f"annotation.guideline:{second.pk}", "Ties allowed", {"version": 1}, {"version": 2}),
    ]
