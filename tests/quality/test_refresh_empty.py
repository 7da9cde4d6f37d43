from __future__ import annotations

import pytest

from quality.models import AgreementReport
from quality.services import agreement_report_refresh
from quality.tasks import agreement_refresh
from tests.factories import ProjectFactory, response_set_create

pytestmark = pytest.mark.django_db


def test_refresh_of_a_project_without_rankings_stores_an_empty_report(client_for, ml_engineer):
    project = ProjectFactory(k=2, overlap=1)
    response_set_create(project=project)

    report_id = agreement_refresh(project.pk)

    report = AgreementReport.objects.get(project=project)
    assert report.pk == report_id
    assert (report.last_ranking_id, report.data["n_comparisons"], report.data["headline"]) == (0, 0, {})
    assert agreement_report_refresh(project=project) is None  # fresh: nothing arrived since
    body = client_for(ml_engineer).get(f"/api/v1/projects/{project.pk}/agreement/").json()
    assert (body["status"], body["rankings_not_included"]) == ("fresh", 0)
