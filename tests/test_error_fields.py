"""A service's error names its field as data (``errors``), and the pages put the message next to
that field from the data, not by parsing the text."""

from __future__ import annotations

import pytest

from annotation.services import project_create
from config.exceptions import ApplicationError
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


def test_a_taken_project_name_is_a_409_naming_the_field(client_for, admin_user):
    ProjectFactory(name="Helpful")
    answer = client_for(admin_user).post("/api/v1/projects/", {"name": "Helpful", "k": 4}, format="json")
    assert (answer.status_code, answer.json()) == (
        409,
        {
            "detail": "name: a project named 'Helpful' already exists.",
            "code": "name_taken",
            "errors": [{"field": "name", "message": "a project named 'Helpful' already exists."}],
        },
    )


def test_the_service_names_the_field_it_refuses():
    with pytest.raises(ApplicationError) as exc:
        project_create(created_by=None, name="x", overlap=51)
    assert (exc.value.message, exc.value.errors) == (
        "overlap: must be at most 50, got 51.",
        [{"field": "overlap", "message": "must be at most 50, got 51."}],
    )


def test_the_project_form_shows_the_services_message_next_to_its_field(admin_user, client):
    ProjectFactory(name="Helpful")
    client.force_login(admin_user)
    page = client.post(
        "/manage/projects/new/",
        {"name": "Helpful", "k": 4, "overlap": 3, "lease_minutes": 30, "task_mode": "rank", "flags": ""},
    )
    assert page.status_code == 200
    form = page.context["form"]
    assert form.errors == {"name": ["a project named 'Helpful' already exists."]}


def test_the_people_form_shows_a_taken_username_next_to_it(admin_user, client):
    client.force_login(admin_user)
    page = client.post("/manage/labelers/", {"username": "ada", "role": "labeler", "email": ""})
    assert page.context["form"].errors["username"] == ["'ada' is already taken."]


def test_a_refused_loop_setting_names_its_setting_as_data():
    from rlhf.services.loop_settings import loop_settings_update

    project = ProjectFactory()
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, generate_prompts=0)
    assert (exc.value.message, exc.value.errors) == (
        "generate_prompts: must be at least 1, got 0.",
        [{"field": "generate_prompts", "message": "generate_prompts: must be at least 1, got 0."}],
    )
