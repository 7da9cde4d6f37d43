"""The OpenAPI schema a client is generated from: one component per body, paginated lists, no warnings."""

from __future__ import annotations

import pytest
import yaml
from django.core.management import call_command


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    call_command("spectacular", "--file", str(path), "--fail-on-warn", "--validate")
    return yaml.safe_load(path.read_text())


def _body(schema: dict, path: str, method: str = "post") -> str:
    return schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]


def _ok(schema: dict, path: str, method: str) -> dict:
    responses = schema["paths"][path][method]["responses"]
    return next(v for k, v in responses.items() if k.startswith("2"))["content"]["application/json"]["schema"]


def test_every_request_body_has_its_own_component(schema):
    bodies = {
        "/api/v1/assignments/{assignment_id}/submit/": "RankingSubmitInputRequest",
        "/api/v1/assignments/{assignment_id}/skip/": "AssignmentSkipInputRequest",
        "/api/v1/users/": "UserListCreateInputRequest",
        "/api/v1/projects/{project_id}/guidelines/": "GuidelineListPublishInputRequest",
        "/api/v1/model-versions/": "ModelVersionListCreateInputRequest",
        "/api/v1/projects/{project_id}/runs/": "TrainingRunListCreateInputRequest",
    }
    for path, component in bodies.items():
        assert _body(schema, path) == f"#/components/schemas/{component}", path
    assert _ok(schema, "/api/v1/auth/token/", "post")["$ref"] == "#/components/schemas/TokenObtainOutput"
    assert schema["components"]["schemas"]["TokenObtainOutput"]["required"] == ["token"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/projects/",
        "/api/v1/projects/{project_id}/prompts/",
        "/api/v1/projects/{project_id}/response-sets/",
        "/api/v1/projects/{project_id}/rankings/",
        "/api/v1/projects/{project_id}/comparisons/",
        "/api/v1/assignments/",
    ],
)
def test_paginated_lists_are_documented_as_pages(schema, path):
    ref = _ok(schema, path, "get")["$ref"].rsplit("/", 1)[1]
    page = schema["components"]["schemas"][ref]
    assert set(page["properties"]) == {"count", "next", "previous", "results"}
    names = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
    assert {"limit", "offset"} <= names
