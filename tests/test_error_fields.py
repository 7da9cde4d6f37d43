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


def test_a_refused_run_config_names_its_key_as_data(client_for, ml_engineer, tiny_models):
    from rlhf.services.registry import model_version_register

    project = ProjectFactory()
    model_version_register(
        project=project, kind="policy", name="sft", path=tiny_models["policy"], is_reference=True, actor=None
    )
    answer = client_for(ml_engineer).post(
        f"/api/v1/projects/{project.pk}/runs/",
        {"kind": "reward", "config": {"model": {"trust_remote_code": True}}},
        format="json",
    )
    why = (
        "whether a model may run its own code is set on its registered model version by an admin, never in a "
        "run config."
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "detail": f"config.model.trust_remote_code: {why}",
            "code": "invalid_config",
            "errors": [{"field": "config.model.trust_remote_code", "message": why}],
        },
    )


def test_a_refused_model_registration_names_its_field_as_data(client_for, ml_engineer, tiny_models):
    from rlhf.services.registry import model_version_register

    project = ProjectFactory()
    model_version_register(project=project, kind="policy", name="sft", path=tiny_models["policy"], actor=None)
    answer = client_for(ml_engineer).post(
        "/api/v1/model-versions/",
        {"project_id": project.pk, "kind": "policy", "name": "sft", "path": tiny_models["policy"]},
        format="json",
    )
    assert (answer.status_code, answer.json()) == (
        409,
        {
            "detail": "name: a policy model named 'sft' already exists in this project.",
            "code": "name_taken",
            "errors": [{"field": "name", "message": "a policy model named 'sft' already exists in this project."}],
        },
    )


@pytest.mark.parametrize(
    ("setting", "bound"),
    [("retrain_min_comparisons", 10_000_000), ("generate_prompts", 100_000), ("max_response_tokens", 4096)],
)
def test_the_service_refuses_a_loop_setting_over_its_bound_and_the_form_has_the_same_bound(setting, bound):
    from frontend.forms import LoopSettingsForm
    from rlhf.services.loop_settings import loop_settings_get, loop_settings_update

    project = ProjectFactory()
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, **{setting: bound + 1})
    message = f"{setting}: must be at most {bound}, got {bound + 1}."
    assert (exc.value.message, exc.value.errors) == (message, [{"field": setting, "message": message}])
    assert getattr(loop_settings_update(project=project, **{setting: bound}), setting) == bound
    assert getattr(loop_settings_get(project=project), setting) == bound
    assert LoopSettingsForm.base_fields[setting].max_value == bound


def test_the_quality_api_names_the_field_as_data_with_the_same_detail(client_for, admin_user):
    from tests.factories import response_set_create

    project = ProjectFactory(k=2)
    response_set = response_set_create(project=project)
    client = client_for(admin_user)
    answer = client.post(
        f"/api/v1/projects/{project.pk}/response-sets/{response_set.pk}/review/accept/",
        {"ranking_id": 987654},
        format="json",
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "detail": "ranking_id: ranking 987654 not found.",
            "code": "invalid",
            "errors": [{"field": "ranking_id", "message": "ranking 987654 not found."}],
        },
    )
    answer = client.get(f"/api/v1/projects/{project.pk}/agreement/nope.csv")
    message = (
        "must be one of by_labeler, by_labeler_pair, by_guideline_version, by_tag, over_time, low_agreement_sets, "
        "got 'nope'."
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": f"table: {message}", "code": "invalid", "errors": [{"field": "table", "message": message}]},
    )
