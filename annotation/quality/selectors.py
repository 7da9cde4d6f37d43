"""Reads of the quality module."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.db.models import Max
from django.utils import timezone

from annotation.models import AgreementReport, Project, Ranking

# Column order per table (JSON storage on PostgreSQL does not keep key order).
CSV_COLUMNS = {
    "by_labeler": [
        "labeler_id",
        "username",
        "percent_agreement",
        "pairs",
        "comparisons",
        "rankings",
        "agreement_with_consensus",
        "gold_items",
        "gold_accuracy",
        "qualification",
        "reliability",
        "position_bias",
        "fast_items",
        "intransitive_cycles",
        "median_time_ms",
    ],
    "by_labeler_pair": ["a", "b", "percent_agreement", "pairs", "cohens_kappa"],
    "by_guideline_version": ["version", "percent_agreement", "pairs", "comparisons"],
    "by_tag": ["tag", "percent_agreement", "pairs", "sets"],
    "over_time": ["date", "percent_agreement", "pairs"],
    "low_agreement_sets": ["response_set_id", "kendall_w"],
}
CSV_TABLES = tuple(CSV_COLUMNS)


def agreement_report_latest(*, project: Project) -> dict[str, Any]:
    """The stored report with how fresh it is: computed when, and how many rankings it has not seen."""
    report = AgreementReport.objects.filter(project=project).first()
    newest = Ranking.objects.filter(response_set__project=project).aggregate(m=Max("id"))["m"] or 0
    if report is None:
        unseen = Ranking.objects.filter(response_set__project=project).count()
        return {
            "status": "missing",
            "computed_at": None,
            "age_seconds": None,
            "rankings_not_included": unseen,
            "report": None,
        }
    unseen = Ranking.objects.filter(response_set__project=project, id__gt=report.last_ranking_id).count()
    return {
        "status": "fresh" if report.last_ranking_id >= newest else "stale",
        "computed_at": report.computed_at.isoformat(),
        "age_seconds": round((timezone.now() - report.computed_at).total_seconds(), 1),
        "rankings_not_included": unseen,
        "report": report.data,
    }


def agreement_table_csv(*, report: dict[str, Any], table: str) -> str:
    """One table of a report as CSV."""
    rows = report.get(table) or []
    out = io.StringIO()
    columns = CSV_COLUMNS[table]
    extra = [key for key in (rows[0] if rows else {}) if key not in columns]
    writer = csv.DictWriter(out, fieldnames=columns + sorted(extra))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
