"""The quality of a project in one pass: load its comparisons once (``quality.loading``), then
compute the agreement report (``quality.agreement``), every set's consensus (``quality.consensus``)
and every labeler's figures (``quality.labeler_figures``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.utils import timezone

from annotation.models import Project
from quality import loading
from quality.agreement import compute_report
from quality.arrays import round6
from quality.consensus import compute_consensus
from quality.labeler_figures import compute_labeler_quality, labeler_rows_complete
from quality.records import AgreementReportRecord


@dataclass
class QualityResult:
    """The report (JSON-able, as computed), the consensus arrays per set and the figures per labeler."""

    report: dict[str, Any]
    consensus: dict[str, np.ndarray]
    labelers: dict[int, dict[str, Any]]

    @property
    def record(self) -> AgreementReportRecord:
        """The report as the typed record that is stored (``record.to_json()``)."""
        return AgreementReportRecord.computed(self.report)


def project_quality(*, project: Project, bootstrap: int = 1000) -> QualityResult:
    """Load a project's comparisons once; compute the agreement report, the consensus of every
    set and every labeler's quality figures."""
    started = time.perf_counter()
    labels = loading.load_labels(project.pk)
    meta = loading.load_ranking_meta(project)
    loaded = time.perf_counter() - started
    labeler_ids = np.unique(np.concatenate([labels.labeler, meta.labeler])).tolist()
    report = compute_report(
        labels,
        k=project.k,
        usernames=loading.load_usernames(labeler_ids),
        set_tags=loading.load_set_tags(project),
        bootstrap=bootstrap,
        review_w=project.review_kendall_w,
    )
    consensus = compute_consensus(labels, project.k) if len(labels) else {}
    labelers = compute_labeler_quality(labels, meta, consensus) if len(labels) else {}
    labeler_rows_complete(report["by_labeler"], labelers, loading.load_gold_standing(project))
    if len(labels):
        report["headline"]["consensus_confidence_mean"] = {"value": round6(float(consensus["confidence"].mean()))}
    report["load_seconds"] = round(loaded, 3)
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["computed_at"] = timezone.now().isoformat()
    return QualityResult(report=report, consensus=consensus, labelers=labelers)


def project_report(*, project: Project, bootstrap: int = 1000) -> dict[str, Any]:
    """The agreement report alone (see ``project_quality``)."""
    return project_quality(project=project, bootstrap=bootstrap).report
