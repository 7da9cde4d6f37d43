"""The agreement report on a small worked example, computed from the database."""

from __future__ import annotations

import numpy as np
import pytest

from annotation.services import assignment_lease_next, ranking_submit
from quality.loading import load_labels
from quality.models import AgreementReport
from quality.report import project_report
from quality.services import agreement_report_refresh
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, PromptFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db


def _rank(project, user, by_text):
    lease = assignment_lease_next(project=project, labeler=user)
    texts = dict(lease.response_set.responses.values_list("id", "text"))
    ranking_submit(
        assignment_id=lease.pk,
        labeler=user,
        idempotency_key=f"{user.pk}-{lease.pk}",
        ranks={pk: by_text[texts[pk]] for pk in texts},
    )


@pytest.fixture
def worked():
    """Set 1 (x, y, z) ranked by L0, L1, L2; set 2 (u, v, w) by L0 and L1. See the numbers below."""
    project = ProjectFactory(k=3, overlap=3)
    response_set_create(project=project, prompt=PromptFactory(project=project, tags=["math"]), texts=["x", "y", "z"])
    second = response_set_create(
        project=project, prompt=PromptFactory(project=project, tags=["math", "code"]), texts=["u", "v", "w"]
    )
    second.required_count = 2
    second.save()
    l0, l1, l2 = (UserFactory(role="labeler", username=name) for name in ("l0", "l1", "l2"))
    _rank(project, l0, {"x": 1, "y": 2, "z": 3})
    _rank(project, l1, {"x": 1, "y": 2, "z": 2})
    _rank(project, l2, {"x": 2, "y": 1, "z": 3})
    _rank(project, l0, {"u": 1, "v": 1, "w": 2})
    _rank(project, l1, {"u": 1, "v": 2, "w": 3})
    return project


def test_report_numbers_match_the_hand_computation(worked):
    report = project_report(project=worked, bootstrap=200)
    head = report["headline"]
    # Set 1: units (x,y) a,a,b -> 1/3; (x,z) a,a,a -> 3/3; (y,z) a,tie,a -> 1/3. Set 2: 2/3.
    assert head["percent_agreement"]["value"] == round(7 / 12, 6)
    assert head["percent_agreement"]["pairs"] == 12
    assert head["percent_agreement_no_ties"]["value"] == round(7 / 9, 6)
    # Kendall's W: set 1 126/198, set 2 78/84 (mid-ranks, tie-corrected).
    assert head["kendall_w_mean"]["value"] == round((126 / 198 + 78 / 84) / 2, 6)
    by_labeler = {row["username"]: row for row in report["by_labeler"]}
    assert by_labeler["l0"]["percent_agreement"] == round(6 / 9, 6)
    assert by_labeler["l1"]["percent_agreement"] == round(5 / 9, 6)
    assert by_labeler["l2"]["percent_agreement"] == 0.5
    assert (by_labeler["l0"]["rankings"], by_labeler["l0"]["comparisons"]) == (2, 6)
    by_tag = {row["tag"]: row for row in report["by_tag"]}
    assert by_tag["code"] == {"tag": "code", "percent_agreement": round(2 / 3, 6), "pairs": 3, "sets": 1}
    assert by_tag["math"]["percent_agreement"] == round(7 / 12, 6)
    lo, hi = head["percent_agreement"]["ci95"]
    assert lo <= 7 / 12 <= hi
    assert report["n_comparisons"] == 15 and report["n_rankings"] == 5 and report["n_sets"] == 2


def test_alpha_equals_krippendorff_on_the_reliability_matrix(worked):
    import krippendorff

    labels = load_labels(worked.pk)
    keys = sorted({(s, a, b) for s, a, b in zip(labels.set_id, labels.a, labels.b, strict=True)})
    labelers = sorted(set(labels.labeler.tolist()))
    matrix = np.full((len(labelers), len(keys)), np.nan)
    for s, a, b, code, lab in zip(labels.set_id, labels.a, labels.b, labels.code, labels.labeler, strict=True):
        matrix[labelers.index(lab), keys.index((s, a, b))] = code
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    report = project_report(project=worked, bootstrap=50)
    assert report["headline"]["krippendorff_alpha_ordinal"]["value"] == round(expected, 6)


def test_empty_project_gives_an_empty_report():
    report = project_report(project=ProjectFactory())
    assert report["n_comparisons"] == 0 and report["headline"] == {}


def test_refresh_stores_once_and_the_api_says_how_fresh(worked, client_for, ml_engineer, labeler):
    client = client_for(ml_engineer)
    missing = client.get(f"/api/v1/projects/{worked.pk}/agreement/").json()
    assert (missing["status"], missing["rankings_not_included"]) == ("missing", 5)
    first = agreement_report_refresh(project=worked)
    assert first is not None and agreement_report_refresh(project=worked) is None
    assert AgreementReport.objects.count() == 1
    body = client.get(f"/api/v1/projects/{worked.pk}/agreement/").json()
    assert (body["status"], body["rankings_not_included"]) == ("fresh", 0)
    assert body["report"]["headline"]["percent_agreement"]["value"] == round(7 / 12, 6)
    # The refresh stores the record (version 1, the computation's keys); the API returns it as stored.
    stored = AgreementReport.objects.get().data
    assert stored["version"] == 1
    assert set(stored) - {"version"} == set(project_report(project=worked, bootstrap=50))
    assert body["report"] == stored
    csv_response = client.get(f"/api/v1/projects/{worked.pk}/agreement/by_labeler.csv")
    assert csv_response.status_code == 200
    lines = csv_response.content.decode().splitlines()
    assert lines[0] == (
        "labeler_id,username,percent_agreement,pairs,comparisons,rankings,agreement_with_consensus,gold_items,"
        "gold_accuracy,qualification,reliability,position_bias,fast_items,intransitive_cycles,median_time_ms"
    )
    assert len(lines) == 4
    assert client.get(f"/api/v1/projects/{worked.pk}/agreement/nope.csv").status_code == 400
    assert client_for(labeler).get(f"/api/v1/projects/{worked.pk}/agreement/").status_code == 403


def test_the_beat_sweep_refreshes_projects_with_new_rankings_without_delayed_messages(settings, labeler, monkeypatch):
    from quality.services import agreement_refresh_due
    from quality.tasks import agreement_refresh_sweep

    settings.QUALITY_REFRESH_ON_SUBMIT = True
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app

    app.conf.task_always_eager = True
    sent: list[dict] = []
    original = app.send_task
    monkeypatch.setattr(app, "send_task", lambda *a, **k: sent.append(k) or original(*a, **k))
    try:
        project = ProjectFactory(k=2, overlap=1)
        idle = ProjectFactory(k=2, overlap=1)
        response_set_create(project=project)
        _rank(
            project,
            labeler,
            {
                "Answer 0 to " + project.prompts.get().external_id: 1,
                "Answer 1 to " + project.prompts.get().external_id: 2,
            },
        )
        assert agreement_refresh_due() == [project.pk]  # not the project without rankings
        assert agreement_refresh_sweep() == 1
        assert AgreementReport.objects.filter(project=project).count() == 1
        assert AgreementReport.objects.filter(project=idle).count() == 0
        assert agreement_refresh_due() == []  # fresh now: the next sweep sends nothing
        assert agreement_refresh_sweep() == 0
        assert all("countdown" not in k and "eta" not in k for k in sent)
    finally:
        app.conf.task_always_eager = False


@postgres_only()
@pytest.mark.django_db(transaction=True)
def test_a_refresh_already_running_elsewhere_is_not_run_twice(settings):
    import psycopg
    from django.db import connection

    from quality.tasks import AGREEMENT_LOCK, agreement_refresh

    project = ProjectFactory(k=2, overlap=1)
    db = connection.settings_dict
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"], autocommit=True
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [AGREEMENT_LOCK, project.pk])  # a worker refreshing it
        assert agreement_refresh(project.pk, True) is None
        assert AgreementReport.objects.filter(project=project).count() == 0
        other.execute("SELECT pg_advisory_unlock(%s, %s)", [AGREEMENT_LOCK, project.pk])
        assert agreement_refresh(project.pk, True) is not None
    finally:
        other.close()
