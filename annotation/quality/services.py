"""Writes of the quality module: refreshing the stored agreement report."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db.models import Max

from annotation.models import AgreementReport, Project, Ranking
from annotation.quality.report import project_report

logger = logging.getLogger(__name__)
KEEP_REPORTS = 50  # history kept per project (for the over-time view of old reports)


def agreement_report_refresh(*, project: Project, force: bool = False) -> AgreementReport | None:
    """Recompute the project's report when rankings arrived since the last one (or ``force``).
    Returns the new report, or ``None`` when the stored one is still fresh."""
    last_ranking = Ranking.objects.filter(response_set__project=project).aggregate(m=Max("id"))["m"] or 0
    latest = AgreementReport.objects.filter(project=project).only("last_ranking_id").first()
    if not force and latest is not None and latest.last_ranking_id >= last_ranking:
        return None
    started = time.perf_counter()
    data = project_report(project=project, bootstrap=settings.QUALITY_BOOTSTRAP_RESAMPLES)
    report = AgreementReport.objects.create(
        project=project, last_ranking_id=last_ranking, seconds=time.perf_counter() - started, data=data
    )
    stale = AgreementReport.objects.filter(project=project).values_list("id", flat=True)[KEEP_REPORTS:]
    AgreementReport.objects.filter(id__in=list(stale)).delete()
    logger.info(
        "agreement report for project %s: %d comparisons in %.2f s", project.pk, data["n_comparisons"], report.seconds
    )
    return report


def agreement_refresh_schedule(*, project_id: int) -> None:
    """Ask a worker to refresh the report a little later; bursts of submits collapse into one run."""
    if not settings.QUALITY_REFRESH_ON_SUBMIT:
        return
    from annotation.tasks import agreement_refresh

    try:
        agreement_refresh.apply_async(args=[project_id], countdown=settings.QUALITY_REFRESH_DELAY_S)
    except Exception:  # a broker outage must never fail a labeler's submit
        logger.exception("could not schedule the agreement refresh of project %s", project_id)
