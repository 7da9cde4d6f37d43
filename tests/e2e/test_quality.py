"""An admin in real Chromium: agreement page, heatmap drill-down, and a review decision."""

from __future__ import annotations

import pytest

from annotation.models import ReviewState
from annotation.services import assignment_lease_next, ranking_submit
from labelers.models import Role
from quality.models import ConsensusSource, ResponseSetConsensus
from quality.services import agreement_report_refresh
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _rank(project, user, order: str) -> None:
    lease = assignment_lease_next(project=project, labeler=user)
    texts = dict(lease.response_set.responses.values_list("id", "text"))
    ranking_submit(
        assignment_id=lease.pk,
        labeler=user,
        idempotency_key=f"{user.pk}-{lease.pk}",
        ranks={pk: order.index(texts[pk]) + 1 for pk in texts},
        comment=f"{user.get_username()} ranked {order}",
    )


def test_admin_drills_into_a_pair_and_accepts_a_ranking(new_page, shot, settings):
    settings.QUALITY_BOOTSTRAP_RESAMPLES = 100
    UserFactory(username="ada", role=Role.ADMIN)
    project = ProjectFactory(name="Helpfulness", k=3, overlap=2)
    split = response_set_create(project=project, texts=["x", "y", "z"])
    response_set_create(project=project, texts=["p", "q", "r"])
    kim, lou = UserFactory(username="kim", role=Role.LABELER), UserFactory(username="lou", role=Role.LABELER)
    _rank(project, kim, "xyz")
    _rank(project, lou, "zyx")
    _rank(project, kim, "pqr")
    _rank(project, lou, "pqr")
    agreement_report_refresh(project=project, force=True)

    page = new_page()
    log_in(page, "ada")
    page.click("nav >> text=Quality")
    page.click("#quality-projects >> text=Helpfulness")
    page.wait_for_selector("#headline")
    assert page.inner_text("#headline li[data-key=percent_agreement] b") == "50.0%"
    shot(page, "agreement")

    # Three of six label pairs agree: the heatmap cell lists both sets, the split one first.
    page.click("#heatmap a")
    page.wait_for_selector("#drilldown-sets")
    assert page.inner_text("#drilldown-result p") == "2 sets · 3 of 6 label pairs agree (50.0%)"
    rows = page.locator("#drilldown-sets tbody tr")
    assert rows.first.get_attribute("data-set-id") == str(split.pk)
    assert page.url.endswith(f"/manage/projects/{project.pk}/quality/")  # htmx swapped the panel in place
    shot(page, "drilldown")

    rows.first.locator("a").click()
    page.wait_for_selector("#review-table")
    assert page.inner_text("#review-state") == "Needs review"
    assert "lou ranked zyx" in page.inner_text("#review-table")
    lou_column = page.locator("#review-table tfoot form", has=page.locator("button", has_text="Accept")).nth(1)
    lou_column.locator("button").click()
    page.wait_for_selector("#review-state >> text=Consensus accepted")
    assert "lou's ranking is now the consensus" in page.inner_text("#review-body")
    shot(page, "accepted")
    consensus = ResponseSetConsensus.objects.get(response_set=split)
    assert consensus.source == ConsensusSource.REVIEW and consensus.accepted_ranking.labeler == lou
    split.refresh_from_db()
    assert split.review_state == ReviewState.ACCEPTED
