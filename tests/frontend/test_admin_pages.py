"""The admin's pages through Django's test client: projects, import report, guidelines, people."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from annotation.models import Project, Ranking
from annotation.services import assignment_lease_next, guideline_publish, ranking_submit
from labelers.models import LabelerStatus, Role
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_labeler_cannot_open_admin_pages(labeler):
    client = Client()
    client.force_login(labeler)
    response = client.get("/manage/projects/")
    assert response.status_code == 403
    assert "Only admins or ml engineers use this page." in response.content.decode()


def test_create_project_with_flags_and_first_guideline(admin_browser, admin_user):
    response = admin_browser.post(
        "/manage/projects/new/",
        {
            "name": "Helpfulness",
            "k": "4",
            "task_mode": "rank",
            "overlap": "2",
            "lease_minutes": "20",
            "flags": "hallucination | Makes up facts\nrude",
            "is_active": "on",
            "guideline": "# Be helpful",
        },
    )
    project = Project.objects.get(name="Helpfulness")
    assert response.status_code == 302 and response["Location"] == f"/manage/projects/{project.pk}/"
    assert (project.k, project.overlap, project.lease_minutes) == (4, 2, 20)
    assert project.flags == [{"key": "hallucination", "label": "Makes up facts"}, {"key": "rude", "label": "Rude"}]
    assert project.current_guideline.version == 1 and project.created_by == admin_user


def test_pairwise_with_k_4_shows_the_service_error_on_the_k_field(admin_browser):
    response = admin_browser.post(
        "/manage/projects/new/", {"name": "P", "k": "4", "task_mode": "pairwise", "overlap": "1", "lease_minutes": "5"}
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {"k": ["pairwise projects show exactly 2 responses, got 4."]}
    assert not Project.objects.exists()


def test_edit_refuses_changing_k_once_sets_exist(admin_browser, project):
    response_set_create(project=project)
    data = {
        "name": project.name,
        "k": "5",
        "task_mode": "rank",
        "overlap": "3",
        "lease_minutes": "30",
        "is_active": "on",
    }
    response = admin_browser.post(f"/manage/projects/{project.pk}/edit/", data)
    assert response.context["form"].errors == {"k": ["cannot change once the project has response sets."]}
    data["k"] = "4"
    data["overlap"] = "5"
    assert admin_browser.post(f"/manage/projects/{project.pk}/edit/", data).status_code == 302
    project.refresh_from_db()
    assert project.overlap == 5


def test_import_reports_every_bad_line_and_imports_nothing(admin_browser, project):
    lines = [
        json.dumps({"external_id": "p1", "prompt": "Hi", "responses": ["a", "b", "c", "d"]}),
        "{not json",
        json.dumps({"external_id": "p3", "prompt": "Hi", "responses": ["a", "b"]}),
    ]
    upload = ("prompts.jsonl", "\n".join(lines).encode())
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = admin_browser.post(
        f"/manage/projects/{project.pk}/import/",
        {"file": SimpleUploadedFile(*upload)},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "2 row(s) have errors; nothing was imported." in page
    assert '<td class="num">2</td>' in page and '<td class="num">3</td>' in page
    assert "expected a multiple of K=4 responses (one response set per 4), got 2" in page
    assert project.prompts.count() == 0

    good = SimpleUploadedFile("ok.jsonl", lines[0].encode())
    response = admin_browser.post(f"/manage/projects/{project.pk}/import/", {"file": good}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Imported ok.jsonl: 1 prompts, 4 responses, 1 response sets." in response.content.decode()


def test_project_page_shows_throughput_per_labeler(admin_browser, labeler):
    project = ProjectFactory(k=2, overlap=1)
    for ms in (1000, 3000, 8000):
        response_set_create(project=project)
        assignment = assignment_lease_next(project=project, labeler=labeler)
        first, second = assignment.display_order
        ranking_submit(
            assignment_id=assignment.pk,
            labeler=labeler,
            idempotency_key=str(ms),
            ranks={str(first): 1, str(second): 2},
            time_spent_ms=ms,
        )
    response = admin_browser.get(f"/manage/projects/{project.pk}/")
    throughput = response.context["throughput"]
    assert throughput["labelers"] == [{"labeler": "lena", "items": 3, "median_ms": 3000}]
    assert throughput["days"][0]["items"] == 3 and throughput["median_ms"] == 3000
    assert "3.0s" in response.content.decode()


def test_publish_preview_and_diff(admin_browser, admin_user, project):
    guideline_publish(project=project, body="line one\nline two", published_by=admin_user)
    preview = admin_browser.post("/manage/guidelines/preview/", {"body": "**bold** <script>x()</script>"})
    assert "<strong>bold</strong> &lt;script&gt;x()&lt;/script&gt;" in preview.content.decode()
    response = admin_browser.post(
        f"/manage/projects/{project.pk}/guidelines/", {"body": "line one\nline 2", "note": "typo"}
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.current_guideline.version == 2 and project.current_guideline.note == "typo"
    diff = admin_browser.get(f"/manage/projects/{project.pk}/guidelines/2/").context["diff"]
    assert [(line.kind, line.text) for line in diff] == [
        ("hunk", "@@ -1,2 +1,2 @@"),
        ("ctx", "line one"),
        ("del", "line two"),
        ("add", "line 2"),
    ]


def test_create_invite_pause_and_reactivate(admin_browser):
    response = admin_browser.post(
        "/manage/labelers/", {"username": "nina", "role": "labeler", "email": ""}, follow=True
    )
    message = str(next(iter(response.context["messages"])))
    assert message.startswith(
        "'nina' invited. Send them this link to set a password: http://testserver/accounts/reset/"
    )
    user = UserFactory._meta.model.objects.get(username="nina")
    assert not user.has_usable_password() and user.profile.role == Role.LABELER

    paused = admin_browser.post(
        f"/manage/labelers/{user.pk}/", {"status": "paused", "status_reason": "quality check"}, HTTP_HX_REQUEST="true"
    )
    assert paused.status_code == 200 and "Reactivate" in paused.content.decode()
    user.profile.refresh_from_db()
    assert (user.profile.status, user.profile.status_reason) == (LabelerStatus.PAUSED, "quality check")
    admin_browser.post(f"/manage/labelers/{user.pk}/", {"status": "active"}, HTTP_HX_REQUEST="true")
    admin_browser.post(f"/manage/labelers/{user.pk}/", {"role": "ml_engineer"}, HTTP_HX_REQUEST="true")
    user.profile.refresh_from_db()
    assert (user.profile.status, user.profile.status_reason, user.profile.role) == ("active", "", "ml_engineer")


def test_labeler_list_shows_counts(admin_browser, labeler):
    project = ProjectFactory(k=2, overlap=1)
    response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    first, second = assignment.display_order
    ranking_submit(
        assignment_id=assignment.pk,
        labeler=labeler,
        idempotency_key="x",
        ranks={str(first): 1, str(second): 1},
        time_spent_ms=2500,
    )
    response = admin_browser.get("/manage/labelers/?role=labeler")
    (row,) = response.context["rows"]
    assert row["activity"] == {"submitted": 1, "submitted_today": 1, "skipped": 0, "median_ms": 2500}
    assert Ranking.objects.count() == 1
