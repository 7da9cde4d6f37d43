"""An ML engineer in real Chromium: a refused evaluation start shown by its field, an evaluation page
that polls until the verdict and then stops, and a leaderboard whose plot keeps every label inside."""

from __future__ import annotations

import pytest

from labelers.models import Role
from rlhf.services.evaluations import evaluation_check, evaluation_start
from rlhf.services.loop import training_run_execute
from tests.e2e.conftest import log_in
from tests.factories import UserFactory
from tests.rlhf.test_evaluations import _for_candidate, _label, _project

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Every text of the chart, as drawn: its box in the SVG's own units, and the SVG's viewBox.
TEXT_BOXES = """svg => {
  const view = svg.viewBox.baseVal;
  return {view: [view.width, view.height], boxes: [...svg.querySelectorAll("text")].map(t => {
    const b = t.getBBox();
    return [t.textContent, b.x, b.y, b.x + b.width, b.y + b.height];
  })};
}"""


def test_engineer_follows_an_evaluation_to_its_verdict_and_the_leaderboard(new_page, shot, tiny_models):
    UserFactory(username="emil", role=Role.ML_ENGINEER)
    project, sft, candidate = _project(tiny_models, min_votes=4, threshold=0.25)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    training_run_execute(run_id=evaluation.run_id)
    _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
    _label(project, "ben", _for_candidate(candidate.pk, "candidate"))

    page = new_page()
    log_in(page, "emil")
    page.goto(f"/manage/projects/{project.pk}/training/")
    # The same policy on both sides: htmx swaps the section in with the error by the baseline.
    page.select_option("#evaluation-candidate", str(sft.pk))
    page.click("#evaluation-start button[type=submit]")
    page.wait_for_selector("#evaluation-baseline_error")
    assert page.inner_text("#evaluation-baseline_error").strip() == (
        "the candidate is the baseline; compare two different policies."
    )
    assert page.url.endswith(f"/manage/projects/{project.pk}/training/")
    shot(page, "start-refused")

    page.click(f"#evaluation-table >> text=evaluation {evaluation.pk}")
    page.wait_for_selector("#evaluation-live")
    assert page.inner_text("#evaluation-win-rate") == "100.0%"
    assert page.inner_text("#evaluation-status") == "Collecting votes"
    assert page.get_attribute("#evaluation-live", "hx-trigger") == "every 5s"
    shot(page, "collecting")
    evaluation_check(evaluation=evaluation)
    # The next poll brings the verdict and no more polling.
    page.wait_for_selector("#evaluation-status.passed", timeout=12_000)
    assert page.get_attribute("#evaluation-live", "hx-get") is None
    assert page.inner_text("#evaluation-reason").startswith("Passed: 4 votes from 2 labelers")
    shot(page, "passed")

    page.click("nav.subnav >> text=Leaderboard")
    page.wait_for_selector("#leaderboard")
    assert page.locator("#leaderboard tbody tr").count() == 2
    assert page.locator("#leaderboard-chart line.errbar").count() == 2
    drawn = page.eval_on_selector("#leaderboard-chart svg", TEXT_BOXES)
    width, height = drawn["view"]
    outside = [box for box in drawn["boxes"] if box[1] < 0 or box[2] < 0 or box[3] > width or box[4] > height]
    assert outside == [], "labels cut off at the edge of the chart"
    assert {box[0] for box in drawn["boxes"]} >= {"ppo-run-1", "sft", "Rating (Elo scale)"}
    shot(page, "leaderboard")
