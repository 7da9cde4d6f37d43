"""Ids in query strings: only ASCII digits are ids ('²' passes str.isdigit() but int() refuses it)."""

from __future__ import annotations

import pytest

from rlhf.models import ModelVersion
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "x"])
def test_compare_with_a_non_ascii_digit_is_a_400(client_for, ml_engineer, value):
    response = client_for(ml_engineer).get("/api/v1/model-versions/compare/", {"a": value, "b": "1"})
    assert response.status_code == 400
    assert response.json() == {
        "detail": "a: a model version id is required",
        "code": "invalid",
        "errors": [{"field": "a", "message": "a model version id is required"}],
    }


@pytest.mark.parametrize("value", ["\u00b2", "x", "-1"])
def test_model_version_list_with_a_bad_project_is_a_400(client_for, ml_engineer, value):
    response = client_for(ml_engineer).get("/api/v1/model-versions/", {"project": value})
    assert response.status_code == 400
    assert response.json() == {
        "detail": f"project: expected a project id, got {value!r}",
        "code": "invalid",
        "errors": [{"field": "project", "message": f"expected a project id, got {value!r}"}],
    }


def test_model_version_list_filters_by_project(client_for, ml_engineer):
    project, other = ProjectFactory(), ProjectFactory()
    mine = ModelVersion.objects.create(project=project, kind="policy", name="sft-v1", path="/models/sft")
    ModelVersion.objects.create(project=other, kind="policy", name="sft-v2", path="/models/sft2")
    response = client_for(ml_engineer).get("/api/v1/model-versions/", {"project": str(project.pk)})
    assert response.status_code == 200
    assert [row["id"] for row in response.json()] == [mine.pk]
