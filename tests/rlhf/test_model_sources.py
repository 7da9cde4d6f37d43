"""Where the training worker may read models and data from, and what a run config may not set:
no arbitrary paths, no remote code switched on by a run config."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from config.exceptions import ApplicationError
from rlhf.models import LoopSettings, ModelVersion, TrainingRun
from rlhf.services.loop_settings import loop_settings_get, loop_settings_update
from rlhf.services.registry import model_version_register
from rlhf.services.runs import training_run_start
from tests.factories import ProjectFactory

NO_REMOTE_CODE = (
    "whether a model may run its own code is set on its registered model version by an admin, never in a run config."
)
NO_PATHS = "a run's models are the project's registered model versions; register the model and promote it."


@pytest.fixture
def roots(settings, tmp_path) -> Path:
    """One model root: a fresh directory; nothing else may be read."""
    root = tmp_path / "models"
    root.mkdir()
    settings.MODEL_ROOTS = [str(root)]
    settings.MODEL_HUB_ALLOWLIST = ["acme/*"]
    return root


def _register(path: str, **kwargs) -> ModelVersion:
    return model_version_register(project=ProjectFactory(), kind="policy", name="sft", path=path, **kwargs, actor=None)


@pytest.mark.django_db
def test_a_local_model_must_be_under_the_model_roots(roots, tiny_models):
    outside = tiny_models["policy"]
    with pytest.raises(ApplicationError) as exc:
        _register(outside)
    assert exc.value.message == (
        f"path: '{outside}' is outside the directories models may be read from ({roots}; "
        "the server setting MODEL_ROOTS adds more)"
    )
    link = roots / "link"
    link.symlink_to(outside)  # a link inside the root to a directory outside it is outside
    with pytest.raises(ApplicationError) as exc:
        _register(str(link))
    assert exc.value.message.startswith(f"path: '{link}' is outside the directories models may be read from")
    escape = f"{roots}/../{Path(outside).name}"
    with pytest.raises(ApplicationError) as exc:
        _register(escape)
    assert "is outside the directories models may be read from" in exc.value.message
    with pytest.raises(ApplicationError) as exc:
        _register("models/sft/v1")
    assert exc.value.message == "path: give an absolute path on the server, got 'models/sft/v1'"
    inside = roots / "sft"
    shutil.copytree(outside, inside)
    assert _register(str(inside)).path == str(inside)
    assert ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_a_hub_id_must_be_on_the_allow_list(roots, monkeypatch):
    with pytest.raises(ApplicationError) as exc:
        _register("evil/model")
    assert exc.value.message == (
        "path: the hub id 'evil/model' is not on the server's allow-list (the setting MODEL_HUB_ALLOWLIST, now: acme/*)"
    )
    with pytest.raises(ApplicationError) as exc:
        _register("acme/model$(id)")
    assert (
        exc.value.message
        == "path: 'acme/model$(id)' is neither an absolute directory on the server nor a hub id (owner/name)"
    )
    # On the list, the model's own files are read next (a hub download: the edge of the world).
    monkeypatch.setattr("rlhf.services.registry.model_role_problem", lambda *a, **k: None)
    assert _register("acme/model").path == "acme/model"


@pytest.fixture
def project_with_sft(tiny_models):
    project = ProjectFactory()
    version = model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    return project, version


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("trust_remote_code", True, NO_REMOTE_CODE), ("model_name_or_path", "/etc", NO_PATHS)],
)
def test_a_run_config_cannot_name_a_model_or_switch_on_remote_code(
    client_for, ml_engineer, admin_user, project_with_sft, field, value, why
):
    project, _ = project_with_sft
    for kind in ("generate", "reward"):
        response = client_for(ml_engineer).post(
            f"/api/v1/projects/{project.pk}/runs/", {"kind": kind, "config": {"model": {field: value}}}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["detail"] == f"config.model.{field}: {why}"
    assert TrainingRun.objects.count() == 0
    response = client_for(admin_user).patch(
        f"/api/v1/projects/{project.pk}/loop-settings/",
        {"generation_config": {"model": {field: value}}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["detail"] == f"generation_config.model.{field}: {why}"
    assert loop_settings_get(project=project).generation_config == {}


@pytest.mark.django_db
def test_a_run_takes_its_model_and_remote_code_from_the_registered_version(tiny_models):
    project = ProjectFactory()
    version = model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        trust_remote_code=True,
        actor=None,
    )
    # A setting stored before the rule existed does not win over the registered version.
    loop_settings_get(project=project)
    LoopSettings.objects.filter(project=project).update(
        generation_config={"model": {"model_name_or_path": "/elsewhere", "trust_remote_code": False}}
    )
    run = training_run_start(project=project, kind="generate")
    assert run.config["model"]["model_name_or_path"] == version.path
    assert run.config["model"]["trust_remote_code"] is True
    ModelVersion.objects.filter(pk=version.pk).update(trust_remote_code=False)
    TrainingRun.objects.all().delete()
    reward = training_run_start(project=project, kind="reward")
    assert (reward.config["model"]["model_name_or_path"], reward.config["model"]["trust_remote_code"]) == (
        version.path,
        False,
    )


@pytest.mark.django_db
def test_the_sft_data_file_must_be_under_the_model_roots(roots, tmp_path):
    outside = tmp_path / "sft.jsonl"
    outside.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    project = ProjectFactory()
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, sft_data_path=str(outside))
    assert exc.value.message == (
        f"sft_data_path: '{outside}' is outside the directories SFT data files may be read from ({roots}; "
        "the server setting MODEL_ROOTS adds more)."
    )
    inside = roots / "sft.jsonl"
    os.replace(outside, inside)
    assert loop_settings_update(project=project, sft_data_path=str(inside)).sft_data_path == str(inside)


@pytest.mark.django_db
def test_token_lengths_are_fitted_to_the_model_or_refused_naming_the_field(tiny_models):
    from transformers import AutoConfig

    positions = AutoConfig.from_pretrained(tiny_models["policy"]).n_positions
    project = ProjectFactory()
    model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    # Left at its default (512), the reward run's length is lowered to what the model holds.
    run = training_run_start(project=project, kind="reward")
    assert run.config["max_length"] == positions
    TrainingRun.objects.all().delete()
    with pytest.raises(ApplicationError) as exc:
        training_run_start(project=project, kind="reward", config={"max_length": positions + 1})
    assert exc.value.message == (
        f"config.max_length: {positions + 1} is more than the {positions} positions of 'sft' (its config's "
        f"max_position_embeddings); give at most {positions}."
    )
    loop = loop_settings_get(project=project)
    with pytest.raises(ApplicationError) as exc:
        training_run_start(project=project, kind="generate", config={"max_prompt_length": positions})
    assert exc.value.message == (
        f"config.max_prompt_length: {positions} + {loop.max_response_tokens} response tokens is more than the "
        f"{positions} positions of 'sft' (its config's max_position_embeddings); give at most "
        f"{positions - loop.max_response_tokens}."
    )
    generate = training_run_start(project=project, kind="generate")
    assert generate.config["max_prompt_length"] == positions - loop.max_response_tokens
    assert TrainingRun.objects.count() == 1
