"""Every role against every endpoint, with exact status codes."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotation.services import assignment_lease_next, guideline_acknowledge, guideline_publish
from labelers.models import Role
from tests.factories import ProjectFactory, UserFactory, response_set_create

ANON, LABELER, ADMIN, ML = "anonymous", Role.LABELER, Role.ADMIN, Role.ML_ENGINEER


@pytest.fixture
def world(db):
    admin = UserFactory(role=ADMIN, username="ada")
    labeler = UserFactory(role=LABELER, username="lena")
    ml = UserFactory(role=ML, username="emil")
    project = ProjectFactory(k=2, overlap=2)
    guideline = guideline_publish(project=project, body="Rank honestly.", published_by=admin)
    guideline_acknowledge(guideline=guideline, user=labeler)
    response_set_create(project=project)
    response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    return {"users": {LABELER: labeler, ADMIN: admin, ML: ml, ANON: None}, "p": project.pk, "a": assignment}


def _ranks(world):
    return {str(pk): i + 1 for i, pk in enumerate(world["a"].display_order)}


# (method, path, body, {role: expected status})
MATRIX = [
    ("get", "/api/v1/me/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/users/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403}),
    (
        "post",
        "/api/v1/users/",
        {"username": "newbie", "password": "long-enough-1"},
        {ANON: 401, LABELER: 403, ADMIN: 201, ML: 403},
    ),
    ("patch", "/api/v1/users/{labeler}/", {"status": "paused"}, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403}),
    ("get", "/api/v1/projects/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/", {"name": "New", "k": 3}, {ANON: 401, LABELER: 403, ADMIN: 201, ML: 403}),
    ("get", "/api/v1/projects/{p}/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("patch", "/api/v1/projects/{p}/", {"overlap": 4}, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403}),
    ("get", "/api/v1/projects/{p}/stats/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/projects/{p}/guidelines/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/{p}/guidelines/", {"body": "v2"}, {ANON: 401, LABELER: 403, ADMIN: 201, ML: 403}),
    ("get", "/api/v1/projects/{p}/guidelines/1/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/{p}/guidelines/1/acknowledge/", None, {ANON: 401, LABELER: 200, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/{p}/import/", "upload", {ANON: 401, LABELER: 403, ADMIN: 201, ML: 403}),
    ("get", "/api/v1/projects/{p}/prompts/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/projects/{p}/response-sets/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/projects/{p}/rankings/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/projects/{p}/comparisons/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("get", "/api/v1/projects/{p}/export/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/{p}/assignments/next/", None, {ANON: 401, LABELER: 200, ADMIN: 403, ML: 403}),
    ("get", "/api/v1/projects/{p}/progress/", None, {ANON: 401, LABELER: 200, ADMIN: 403, ML: 403}),
    ("get", "/api/v1/assignments/", None, {ANON: 401, LABELER: 200, ADMIN: 403, ML: 403}),
    ("get", "/api/v1/assignments/{a}/", None, {ANON: 401, LABELER: 200, ADMIN: 403, ML: 403}),
    ("post", "/api/v1/assignments/{a}/submit/", "ranks", {ANON: 401, LABELER: 201, ADMIN: 403, ML: 403}),
    ("post", "/api/v1/assignments/{a}/skip/", {"reason": "unclear"}, {ANON: 401, LABELER: 200, ADMIN: 403, ML: 403}),
    ("get", "/api/v1/model-versions/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    (
        "post",
        "/api/v1/model-versions/",
        "model",
        {ANON: 401, LABELER: 403, ADMIN: 201, ML: 201},
    ),
    ("get", "/api/v1/projects/{p}/agreement/", None, {ANON: 401, LABELER: 403, ADMIN: 200, ML: 200}),
    ("post", "/api/v1/projects/{p}/agreement/refresh/", None, {ANON: 401, LABELER: 403, ADMIN: 202, ML: 202}),
    ("get", "/api/v1/projects/{p}/agreement/by_labeler.csv", None, {ANON: 401, LABELER: 403, ADMIN: 409, ML: 409}),
    ("post", "/api/v1/projects/{p}/response-sets/{s}/gold/", "gold", {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403}),
    (
        "post",
        "/api/v1/projects/{p}/response-sets/{s}/review/more-labels/",
        None,
        {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403},
    ),
    (
        "post",
        "/api/v1/projects/{p}/labelers/{labeler}/override/",
        {"override": True},
        {ANON: 401, LABELER: 403, ADMIN: 200, ML: 403},
    ),
    ("get", "/api/v1/schema/", None, {ANON: 200, LABELER: 200, ADMIN: 200, ML: 200}),
]
CASES = [
    pytest.param(method, path, body, role, expected[role], id=f"{method.upper()} {path} as {role}")
    for method, path, body, expected in MATRIX
    for role in (ANON, LABELER, ADMIN, ML)
]


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), CASES)
def test_permission_matrix(world, client_for, request, method, path, body, role, status):
    url = path.format(p=world["p"], a=world["a"].pk, s=world["a"].response_set_id, labeler=world["users"][LABELER].pk)
    client = client_for(world["users"][role])
    kwargs: dict = {}
    if body == "upload":
        upload = SimpleUploadedFile("rows.csv", b"external_id,prompt,response_1,response_2\nz,p,x,y\n")
        kwargs = {"data": {"file": upload}, "format": "multipart"}
    elif body == "gold":
        kwargs = {"data": {"ranks": _ranks(world)}, "format": "json"}
    elif body == "model":  # registration reads the model: it must be a real one
        policy = request.getfixturevalue("tiny_models")["policy"]
        kwargs = {"data": {"kind": "policy", "name": "sft", "path": policy}, "format": "json"}
    elif body == "ranks":
        kwargs = {"data": {"idempotency_key": "perm", "ranks": _ranks(world)}, "format": "json"}
    elif body is not None:
        kwargs = {"data": body, "format": "json"}
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status, response.content[:300]
    if status in (401, 403):
        assert set(response.json()) == {"detail", "code"}


def test_error_bodies_say_what_is_wrong(world, client_for):
    anon = client_for(None).get("/api/v1/projects/")
    assert anon.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}
    assert anon["WWW-Authenticate"] == "Token"
    admin = client_for(world["users"][ADMIN])
    forbidden = admin.post(f"/api/v1/projects/{world['p']}/assignments/next/")
    assert forbidden.json() == {"detail": "Only labelers may do this.", "code": "permission_denied"}
    bad = admin.post("/api/v1/projects/", {"name": "X", "k": 12}, format="json")
    assert bad.status_code == 400
    assert bad.json() == {
        "detail": "k: Ensure this value is less than or equal to 9.",
        "code": "invalid",
        "errors": [{"field": "k", "message": "Ensure this value is less than or equal to 9."}],
    }
    pairwise = admin.post("/api/v1/projects/", {"name": "X", "k": 3, "task_mode": "pairwise"}, format="json")
    assert (pairwise.status_code, pairwise.json()["detail"]) == (
        400,
        "k: pairwise projects show exactly 2 responses, got 3.",
    )
    missing = admin.get("/api/v1/projects/999999/")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Project 999999 not found.", "code": "not_found"})


def test_a_labeler_never_reaches_another_labelers_assignment(world, client_for):
    other = UserFactory(role=LABELER)
    client = client_for(other)
    assignment = world["a"]
    assert client.get(f"/api/v1/assignments/{assignment.pk}/").status_code == 404
    submit = client.post(
        f"/api/v1/assignments/{assignment.pk}/submit/", {"idempotency_key": "x", "ranks": _ranks(world)}, format="json"
    )
    assert (submit.status_code, submit.json()["detail"]) == (404, f"Assignment {assignment.pk} not found.")
    assert client.get("/api/v1/assignments/").json()["count"] == 0


def test_token_auth_round_trip(world, client_for):
    from rest_framework.test import APIClient

    client = APIClient()
    token = client.post("/api/v1/auth/token/", {"username": "lena", "password": "correct-horse-battery"}, format="json")
    assert token.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert client.get("/api/v1/me/").json()["role"] == "labeler"
    wrong = APIClient().post("/api/v1/auth/token/", {"username": "lena", "password": "nope"}, format="json")
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "Unable to log in with provided credentials."


def test_lease_and_submit_over_the_api(world, client_for):
    client = client_for(world["users"][LABELER])
    lease = client.post(f"/api/v1/projects/{world['p']}/assignments/next/").json()
    assert lease["id"] == world["a"].pk
    assert [r["id"] for r in lease["responses"]] == world["a"].display_order
    assert lease["guideline_version"] == 1
    body = {"idempotency_key": "api-1", "ranks": _ranks(world), "scores": {str(world["a"].display_order[0]): 6}}
    first = client.post(f"/api/v1/assignments/{lease['id']}/submit/", body, format="json")
    again = client.post(f"/api/v1/assignments/{lease['id']}/submit/", body, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and first.json()["comparisons"] == 1
    assert again.json()["created"] is False
    bad = client.post(f"/api/v1/assignments/{lease['id']}/submit/", {"ranks": {}}, format="json")
    assert (bad.status_code, bad.json()["detail"]) == (400, "idempotency_key: This field is required.")
    nxt = client.post(f"/api/v1/projects/{world['p']}/assignments/next/")
    assert nxt.status_code == 200 and nxt.json()["id"] != lease["id"]
    client.post(f"/api/v1/assignments/{nxt.json()['id']}/skip/", {"reason": "off-topic"}, format="json")
    done = client.post(f"/api/v1/projects/{world['p']}/assignments/next/")
    assert done.status_code == 204
    progress = client.get(f"/api/v1/projects/{world['p']}/progress/").json()
    assert progress == {"done_today": 1, "done_total": 1, "left": 0}


def test_quality_settings_over_the_api(world, client_for):
    admin = client_for(world["users"][ADMIN])
    created = admin.post(
        "/api/v1/projects/", {"name": "Gold", "k": 2, "gold_rate": 0.1, "qualification_items": 3}, format="json"
    )
    assert created.status_code == 201
    assert (created.json()["gold_rate"], created.json()["qualification_items"]) == (0.1, 3)
    patched = admin.patch(f"/api/v1/projects/{created.json()['id']}/", {"review_kendall_w": 0.5}, format="json")
    assert (patched.status_code, patched.json()["review_kendall_w"]) == (200, 0.5)
    bad = admin.patch(f"/api/v1/projects/{created.json()['id']}/", {"gold_rate": 2}, format="json")
    assert (bad.status_code, bad.json()["detail"]) == (
        400,
        "gold_rate: Ensure this value is less than or equal to 1.0.",
    )
