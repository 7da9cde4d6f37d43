"""The labeling hot path: hand-written SQL that must behave like the ORM, with a fixed statement count.

Lease and submit are what every labeler does for every item; their cost is a handful of
statements. These tests pin the counts (a stray ORM query in the path fails them), check that rows
read by ``config.db`` become the same objects the ORM builds, that the lease's answer matches the
serializer the schema documents, and that a submit claiming an assignment someone else already
claimed writes nothing.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from annotation import selectors
from annotation.api.labeling import AssignmentOutput, assignment_body
from annotation.models import Assignment, AssignmentStatus, Comparison, Project, Prompt, Ranking, ResponseSet
from annotation.services import (
    assignment_lease_next,
    assignment_skip,
    guideline_acknowledge,
    guideline_publish,
    ranking_submit,
)
from annotation.services import ranking as ranking_service
from config import db
from config.exceptions import ApplicationError
from labelers.models import Role
from labelers.tokens import api_token_create
from tests.factories import ProjectFactory, PromptFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db

TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "BEGIN", "COMMIT")


def _statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries if not query["sql"].startswith(TRANSACTION_CONTROL)]


@pytest.fixture
def setup(db):
    admin = UserFactory(role=Role.ADMIN)
    labeler = UserFactory(role=Role.LABELER)
    project = ProjectFactory(k=4, overlap=3)
    guideline = guideline_publish(project=project, body="Rank them.", published_by=admin)
    guideline_acknowledge(guideline=guideline, user=labeler)
    prompt = PromptFactory(
        project=project, text="", messages=[{"role": "user", "content": "Hi?"}], tags=["chat", "greeting"]
    )
    for _ in range(3):
        response_set_create(project=project)
    response_set_create(project=project, prompt=prompt)
    return project, labeler


def _ranks(assignment: Assignment) -> dict[str, int]:
    return {str(pk): min(i + 1, 3) for i, pk in enumerate(assignment.display_order)}  # ties at the end


def test_lease_and_submit_run_a_fixed_number_of_statements(setup):
    project, labeler = setup
    project = selectors.project_get(project_id=project.pk)
    # A first cycle: the process remembers the guideline acknowledgement after its first check.
    first = assignment_lease_next(project=project, labeler=labeler)
    ranking_submit(assignment_id=first.pk, labeler=labeler, idempotency_key="warm", ranks=_ranks(first))

    with CaptureQueriesContext(connection) as lease_queries:
        lease = assignment_lease_next(project=project, labeler=labeler)
    # my leases, the candidate set with its prompt, its responses with the live lease count, the insert
    assert len(_statements(lease_queries)) == 4, _statements(lease_queries)
    with CaptureQueriesContext(connection) as submit_queries:
        ranking, created = ranking_submit(
            assignment_id=lease.pk, labeler=labeler, idempotency_key="k", ranks=_ranks(lease)
        )
    assert created
    # PostgreSQL: read, then one statement for all the writes; SQLite (the locked path): the key,
    # the read and four writes
    assert len(_statements(submit_queries)) == (2 if connection.vendor == "postgresql" else 6)
    assert Comparison.objects.filter(ranking=ranking).count() == 6


def test_api_lease_and_submit_with_a_token_are_six_and_three_statements(setup):
    project, labeler = setup
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=labeler)[1]}")
    warm = client.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    warm_ranks = {str(r["id"]): 1 for r in warm["responses"]}
    client.post(
        f"/api/v1/assignments/{warm['id']}/submit/", {"idempotency_key": "w", "ranks": warm_ranks}, format="json"
    )

    with CaptureQueriesContext(connection) as lease_queries:
        lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/")
    assert lease.status_code == 200
    assert len(_statements(lease_queries)) == 6  # token, project, and the lease's four
    body = {"idempotency_key": "k", "ranks": {str(r["id"]): 1 for r in lease.json()["responses"]}}
    with CaptureQueriesContext(connection) as submit_queries:
        submit = client.post(f"/api/v1/assignments/{lease.json()['id']}/submit/", body, format="json")
    assert submit.status_code == 201
    assert len(_statements(submit_queries)) == (3 if connection.vendor == "postgresql" else 7)


def test_the_lease_body_is_what_the_schema_serializer_says(setup):
    project, labeler = setup
    seen_chat = False
    for _ in range(4):
        lease = assignment_lease_next(project=project, labeler=labeler)
        body = assignment_body(lease)
        assert body == dict(AssignmentOutput(lease).data)
        assert body["guideline_version"] == 1
        assert [r["id"] for r in body["responses"]] == lease.display_order
        # The same assignment loaded again by the ORM (its responses fetched separately) answers the same.
        again = selectors.assignment_get(assignment_id=lease.pk, labeler=labeler)
        assert assignment_body(again) == body
        if lease.response_set.prompt.messages:
            seen_chat = True
            messages = [{"role": "user", "content": "Hi?"}]
            assert body["prompt"] == {"text": "", "messages": messages, "tags": ["chat", "greeting"]}
        ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key=f"s{lease.pk}", ranks=_ranks(lease))
    assert seen_chat


@pytest.mark.parametrize("model", [Project, Prompt, ResponseSet, Assignment, Ranking])
def test_rows_read_by_hand_become_the_objects_the_orm_builds(setup, model):
    project, labeler = setup
    lease = assignment_lease_next(project=project, labeler=labeler)
    ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key="x", ranks=_ranks(lease))
    ResponseSet.objects.filter(pk=lease.response_set_id).update(is_gold=True, gold_ranks={"1": 1})
    orm = model.objects.order_by("-pk").first()
    row = db.fetch_one(f"SELECT {db.columns(model, 't')}, 42 FROM {db.table(model)} t WHERE t.id = %s", [orm.pk])
    built, end = db.instance(model, row)
    assert row[end] == 42
    for field in model._meta.concrete_fields:
        assert getattr(built, field.attname) == getattr(orm, field.attname), field.name
        assert type(getattr(built, field.attname)) is type(getattr(orm, field.attname)), field.name
    assert not built._state.adding


def test_a_stale_read_cannot_submit_twice(setup):
    """The unlocked submit claims the assignment in the same statement that writes: if the lease is
    no longer live when it runs, nothing is written (PostgreSQL; SQLite always takes the locked path)."""
    if connection.vendor != "postgresql":
        pytest.skip("the unlocked submit is PostgreSQL's")
    project, labeler = setup
    lease = assignment_lease_next(project=project, labeler=labeler)
    stale = ranking_service._load(assignment_id=lease.pk, labeler=labeler, lock=False)
    ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key="first", ranks=_ranks(lease))
    clean = ranking_service._clean(
        loaded=stale, ranks=_ranks(lease), choice=None, scores=None, flags=None, comment="", time_spent_ms=0
    )
    now = timezone.now()
    again = ranking_service._write(
        loaded=stale, labeler=labeler, key="second", clean=clean, now=now, live_after=now, late=False
    )
    assert again is None
    assert Ranking.objects.filter(assignment=lease).count() == 1
    assert Comparison.objects.filter(ranking__assignment=lease).count() == 6
    assert ResponseSet.objects.get(pk=lease.response_set_id).submitted_count == 1


def test_an_expired_lease_is_not_claimed_by_the_unlocked_submit(setup):
    project, labeler = setup
    lease = assignment_lease_next(project=project, labeler=labeler)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    ranking, created = ranking_submit(
        assignment_id=lease.pk, labeler=labeler, idempotency_key="late", ranks=_ranks(lease)
    )
    assert created and ranking.submitted_late  # the locked path let it in: the set still needs it
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.SUBMITTED


def test_a_submit_body_that_is_not_an_object_is_a_400(setup):
    project, labeler = setup
    client = APIClient()
    client.force_authenticate(user=labeler)
    lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    answer = client.post(f"/api/v1/assignments/{lease['id']}/submit/", [1, 2], format="json")
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "Send a JSON object with idempotency_key and ranks (or choice), not list.",
        "code": "invalid",
    }
    wrong_type = client.post(
        f"/api/v1/assignments/{lease['id']}/submit/",
        {"idempotency_key": "k", "ranks": {str(r["id"]): 1 for r in lease["responses"]}, "time_spent_ms": "soon"},
        format="json",
    )
    assert (wrong_type.status_code, wrong_type.json()["detail"]) == (
        400,
        "time_spent_ms: must be a non-negative whole number.",
    )
    assert not Ranking.objects.exists()


def test_ids_too_big_for_the_database_are_not_found(setup):
    _, labeler = setup
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=labeler)[1]}")
    big = 10**25
    lease = client.post(f"/api/v1/projects/{big}/assignments/next/")
    assert (lease.status_code, lease.json()["detail"]) == (404, f"Project {big} not found.")
    body = {"idempotency_key": "k", "ranks": {"1": 1}}
    submit = client.post(f"/api/v1/assignments/{big}/submit/", body, format="json")
    assert (submit.status_code, submit.json()["detail"]) == (404, f"Assignment {big} not found.")


def _client(labeler) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=labeler)[1]}")
    return client


@pytest.mark.parametrize(
    ("field", "value"),
    [("idempotency_key", "k\x00"), ("idempotency_key", "k\ud800"), ("comment", "fine\x00"), ("comment", "\udfffx")],
)
def test_text_the_database_cannot_store_is_a_400_naming_the_field(setup, field, value):
    project, labeler = setup
    client = _client(labeler)
    lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    body = {"idempotency_key": "k", "ranks": {str(r["id"]): 1 for r in lease["responses"]}, field: value}
    # json.dumps escapes the NUL and the lone surrogate; the server's parser turns them back.
    answer = client.post(
        f"/api/v1/assignments/{lease['id']}/submit/", json.dumps(body), content_type="application/json"
    )
    message = "must not contain NUL characters or unpaired surrogates."
    assert (answer.status_code, answer.json()) == (
        400,
        {"detail": f"{field}: {message}", "code": "invalid", "errors": [{"field": field, "message": message}]},
    )
    assert not Ranking.objects.exists()
    assert Assignment.objects.get(pk=lease["id"]).status == AssignmentStatus.LEASED


def test_the_key_is_trimmed_and_odd_response_ids_are_a_400(setup):
    project, labeler = setup
    client = _client(labeler)
    lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    url = f"/api/v1/assignments/{lease['id']}/submit/"
    ranks = {str(r["id"]): 1 for r in lease["responses"]}
    odd = client.post(url, {"idempotency_key": "k", "ranks": ranks, "scores": {"²": 3}}, format="json")
    assert (odd.status_code, odd.json()["detail"]) == (400, "scores: response ² is not in this response set.")
    first = client.post(url, {"idempotency_key": " k ", "ranks": ranks}, format="json")
    again = client.post(url, {"idempotency_key": "k", "ranks": ranks}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Ranking.objects.get().idempotency_key == "k"


@pytest.mark.parametrize(("left", "locked"), [(timedelta(minutes=10), False), (timedelta(seconds=10), True)])
def test_a_lease_near_its_end_is_submitted_under_the_sets_lock(setup, left, locked):
    """The unlocked submit needs the lease live for CLAIM_MARGIN more: nearer its end, a lease
    elsewhere could see it lapse and give its slot away before the claim commits."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite always takes the locked path")
    project, labeler = setup
    lease = assignment_lease_next(project=project, labeler=labeler)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + left)
    with CaptureQueriesContext(connection) as queries:
        ranking, created = ranking_submit(
            assignment_id=lease.pk, labeler=labeler, idempotency_key="k", ranks=_ranks(lease)
        )
    assert created and not ranking.submitted_late
    took_lock = any("FOR NO KEY UPDATE OF s, a" in query["sql"] for query in queries.captured_queries)
    assert took_lock is locked
    assert ResponseSet.objects.get(pk=lease.response_set_id).submitted_count == 1


def test_a_submit_that_would_overfill_its_set_is_a_409_and_writes_nothing(setup):
    """If a set's slot went to someone else's late submit anyway, the database's check refuses the
    extra ranking; the labeler gets a 409 that says so, not a 500."""
    project, labeler = setup
    lease = assignment_lease_next(project=project, labeler=labeler)
    ResponseSet.objects.filter(pk=lease.response_set_id).update(submitted_count=project.overlap)
    answer = _client(labeler).post(
        f"/api/v1/assignments/{lease.pk}/submit/", {"idempotency_key": "k", "ranks": _ranks(lease)}, format="json"
    )
    assert (answer.status_code, answer.json()) == (
        409,
        {
            "detail": "This item already has all the rankings it needs; this ranking was not saved.",
            "code": "set_complete",
        },
    )
    assert not Ranking.objects.exists() and not Comparison.objects.exists()
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.LEASED


@pytest.mark.parametrize(
    ("reason", "api_message"),
    [
        ("off\x00topic", "reason: Null characters are not allowed."),
        ("off\ud800topic", "reason: Surrogate characters are not allowed: U+D800."),
    ],
)
def test_a_skip_reason_the_database_cannot_store_is_a_400(setup, reason, api_message):
    """The API's serializer refuses it first; the service refuses it for every other caller (the
    ranking page's skip button among them), where PostgreSQL would otherwise fail with a 500."""
    project, labeler = setup
    client = _client(labeler)
    lease = client.post(f"/api/v1/projects/{project.pk}/assignments/next/").json()
    url = f"/api/v1/assignments/{lease['id']}/skip/"
    answer = client.post(url, json.dumps({"reason": reason}), content_type="application/json")
    assert (answer.status_code, answer.json()["detail"]) == (400, api_message)
    with pytest.raises(ApplicationError) as exc:
        assignment_skip(assignment_id=lease["id"], labeler=labeler, reason=reason)
    assert (exc.value.status, exc.value.message) == (
        400,
        "reason: must not contain NUL characters or unpaired surrogates.",
    )
    assert Assignment.objects.get(pk=lease["id"]).status == AssignmentStatus.LEASED
