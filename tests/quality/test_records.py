"""The stored agreement report's record (``quality.records``): it reads the dict the refresh stored
before records had a version, writes it back key for key (plus ``version``), and the pages and the
API render an old row as they render a new one."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client

from quality.agreement import LOW_AGREEMENT_W
from quality.models import AgreementReport
from quality.records import AgreementReportRecord, LabelerRow, LowSetRow, Statistic
from tests.factories import ProjectFactory

# What the refresh stored before this record (no "version"): the worked example of
# tests/quality/test_report.py as quality.report.project_quality computed it, copied literally.
TIE_HANDLING = (
    "percent_agreement: a tie is a third answer and agrees only with a tie; "
    "percent_agreement_no_ties: label pairs where either labeler said tie are left out."
)
OLD_REPORT = {
    "n_comparisons": 15,
    "n_rankings": 5,
    "n_labelers": 3,
    "n_sets": 2,
    "tie_handling": TIE_HANDLING,
    "headline": {
        "percent_agreement": {"value": 0.583333, "ci95": [0.5555555555555556, 0.6666666666666666], "pairs": 12},
        "percent_agreement_no_ties": {"value": 0.777778, "ci95": [0.7142857142857143, 1.0], "pairs": 9},
        "krippendorff_alpha_ordinal": {"value": -0.164103, "ci95": [-0.21006944444444442, -0.10000000000000009]},
        "krippendorff_alpha_interval_ranks": {"value": 0.637037},
        "fleiss_kappa": {"value": -0.2, "raters": 2},
        "kendall_w_mean": {"value": 0.782468, "sets": 2},
        "kendall_tau_mean": {"value": 0.491582, "ranking_pairs": 4},
        "consensus_confidence_mean": {"value": 0.805556},
    },
    "by_guideline_version": [{"version": None, "percent_agreement": 0.583333, "pairs": 12, "comparisons": 15}],
    "by_tag": [
        {"tag": "code", "percent_agreement": 0.666667, "pairs": 3, "sets": 1},
        {"tag": "math", "percent_agreement": 0.583333, "pairs": 12, "sets": 2},
    ],
    "by_labeler": [
        {
            "labeler_id": 1,
            "username": "l0",
            "percent_agreement": 0.666667,
            "pairs": 9,
            "comparisons": 6,
            "rankings": 2,
            "reliability": 0.833334,
            "agreement_with_consensus": 0.833333,
            "position_bias": 0.6,
            "fast_items": 0,
            "intransitive_cycles": 0,
            "median_time_ms": 0,
            "gold_items": 0,
            "gold_accuracy": None,
            "qualification": "not_required",
        },
        {
            "labeler_id": 3,
            "username": "l2",
            "percent_agreement": 0.5,
            "pairs": 6,
            "comparisons": 3,
            "rankings": 1,
            "reliability": 0.666666,
            "agreement_with_consensus": 0.666667,
            "position_bias": 0.333333,
            "fast_items": 0,
            "intransitive_cycles": 0,
            "median_time_ms": 0,
            "gold_items": 0,
            "gold_accuracy": None,
            "qualification": "not_required",
        },
    ],
    "by_labeler_pair": [
        {"a": 1, "b": 2, "percent_agreement": 0.666667, "pairs": 6, "cohens_kappa": None},
        {"a": 1, "b": 3, "percent_agreement": 0.666667, "pairs": 3, "cohens_kappa": None},
    ],
    "over_time": [{"date": "2026-12-03", "percent_agreement": 0.583333, "pairs": 12}],
    "low_agreement_sets": [{"response_set_id": 7, "kendall_w": 0.1}],
    "low_agreement_count": 1,
    "kendall_w_threshold": 0.3,
    "seconds": 1.569,
    "load_seconds": 0.001,
    "computed_at": "2026-12-03T08:51:23.026146+00:00",
}
# A project without comparisons: the computation stops before the low-agreement count and threshold.
OLD_EMPTY_REPORT = {
    "n_comparisons": 0,
    "n_rankings": 0,
    "n_labelers": 0,
    "n_sets": 0,
    "tie_handling": TIE_HANDLING,
    "headline": {},
    "by_guideline_version": [],
    "by_tag": [],
    "by_labeler": [],
    "by_labeler_pair": [],
    "over_time": [],
    "low_agreement_sets": [],
    "seconds": 0.0,
    "load_seconds": 0.002,
    "computed_at": "2026-12-03T08:51:23.026146+00:00",
}


def test_an_old_report_reads_into_typed_fields():
    record = AgreementReportRecord.from_json(OLD_REPORT)
    assert record.version == 0
    assert (record.n_comparisons, record.n_rankings, record.n_labelers, record.n_sets) == (15, 5, 3, 2)
    assert record.headline.percent_agreement == Statistic(0.583333, (0.5555555555555556, 0.6666666666666666), 12)
    assert record.headline.krippendorff_alpha_ordinal == Statistic(
        -0.164103, (-0.21006944444444442, -0.10000000000000009), None
    )
    assert record.headline.fleiss_kappa == Statistic(-0.2, None, 2)
    assert record.headline.consensus_confidence_mean == Statistic(0.805556)
    assert record.by_labeler[1] == LabelerRow(3, "l2", 0.5, 6, 3, 1, 0.666666, 0.666667, 0.333333, 0, 0, 0)
    assert record.labeler(3) == record.by_labeler[1] and record.labeler(2) is None
    assert (record.by_guideline_version[0].version, [row.tag for row in record.by_tag]) == (None, ["code", "math"])
    assert record.low_agreement_sets == [LowSetRow(7, 0.1)] and record.low_w == {7: 0.1}
    assert (record.low_count, record.review_threshold) == (1, 0.3)


def test_an_old_report_writes_back_key_for_key_with_its_version():
    assert json.dumps(AgreementReportRecord.from_json(OLD_REPORT).to_json()) == json.dumps({"version": 0, **OLD_REPORT})
    new = {"version": 1, **OLD_REPORT}
    assert json.dumps(AgreementReportRecord.from_json(new).to_json()) == json.dumps(new)
    empty = AgreementReportRecord.from_json(OLD_EMPTY_REPORT)
    assert empty.to_json() == {"version": 0, **OLD_EMPTY_REPORT}
    assert list(empty.to_json()) == ["version", *OLD_EMPTY_REPORT]
    assert (empty.low_count, empty.review_threshold, empty.headline.percent_agreement) == (0, LOW_AGREEMENT_W, None)


def test_a_report_from_before_the_labeler_figures_gets_empty_figures_not_errors():
    row = {"labeler_id": 4, "username": "l4", "percent_agreement": 0.5, "pairs": 2, "comparisons": 2, "rankings": 1}
    record = AgreementReportRecord.from_json({**OLD_REPORT, "by_labeler": [row]})
    assert record.by_labeler == [LabelerRow(4, "l4", 0.5, 2, 2, 1)]
    assert (record.by_labeler[0].qualification, record.by_labeler[0].position_bias_skewed) == ("not_required", False)


@pytest.mark.django_db
def test_a_stored_old_report_renders_on_the_page_and_in_the_api(client_for, make_user):
    project = ProjectFactory(k=3, name="Old")
    AgreementReport.objects.create(project=project, data=OLD_REPORT)
    viewer = make_user("admin", username="viewer")
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/manage/projects/{project.pk}/quality/").content.decode()
    text = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", page).split()))
    assert "Percent agreement 58.3% 95% CI 55.6% – 66.7% 12 label pairs" in text
    assert "Fleiss' κ -0.200 2 raters per pair" in text
    assert "l2 1 50.0% 6 66.7%" in text
    assert "1 set with Kendall's W below 0.3" in text
    body = client_for(viewer).get(f"/api/v1/projects/{project.pk}/agreement/").json()
    assert body["report"] == {"version": 0, **OLD_REPORT}
