"""Writes of the quality app: the agreement refresh (report, consensus, labeler figures, review
queue, automatic pauses), gold scoring and qualification, review decisions, overrides."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Max, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

from annotation import rules
from annotation.models import Project, Ranking, ResponseSet, ResponseSetStatus, ReviewState
from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError, Conflict
from labelers.models import LabelerStatus
from labelers.services import user_update
from labelers.types import AuthUser
from quality.models import (
    AUTO_PAUSE_PREFIX,
    AgreementReport,
    ConsensusSource,
    LabelerQuality,
    QualificationState,
    ResponseSetConsensus,
)
from quality.report import project_quality

logger = logging.getLogger(__name__)
KEEP_REPORTS = 50  # history kept per project (for the over-time view of old reports)


def agreement_report_refresh(*, project: Project, force: bool = False) -> AgreementReport | None:
    """Recompute the project's quality when rankings arrived since the last report (or ``force``):
    the agreement report, every set's consensus, every labeler's figures, the review queue and
    automatic pauses. Returns the new report, or ``None`` when the stored one is still fresh."""
    last_ranking = Ranking.objects.filter(response_set__project=project).aggregate(m=Max("id"))["m"] or 0
    latest = AgreementReport.objects.filter(project=project).only("last_ranking_id").first()
    if not force and latest is not None and latest.last_ranking_id >= last_ranking:
        return None
    started = time.perf_counter()
    result = project_quality(project=project, bootstrap=settings.QUALITY_BOOTSTRAP_RESAMPLES)
    record = result.record
    with transaction.atomic():
        _store_consensus(project=project, consensus=result.consensus)
        _store_labeler_quality(project=project, labelers=result.labelers)
        low = [row.response_set_id for row in record.low_agreement_sets]
        ResponseSet.objects.filter(project=project, id__in=low, review_state="").update(
            review_state=ReviewState.NEEDS_REVIEW
        )
        report = AgreementReport.objects.create(
            project=project, last_ranking_id=last_ranking, seconds=time.perf_counter() - started, data=record.to_json()
        )
        stale = AgreementReport.objects.filter(project=project).values_list("id", flat=True)[KEEP_REPORTS:]
        AgreementReport.objects.filter(id__in=list(stale)).delete()
    logger.info(
        "quality of project %s: %d comparisons in %.2f s",
        project.pk,
        record.n_comparisons,
        report.seconds,
    )
    return report


def _store_consensus(*, project: Project, consensus: dict[str, Any]) -> None:
    if not consensus:
        return
    kept = set(
        ResponseSetConsensus.objects.filter(response_set__project=project)
        .exclude(source=ConsensusSource.MODEL)
        .values_list("response_set_id", flat=True)
    )
    ResponseSetConsensus.objects.filter(response_set__project=project, source=ConsensusSource.MODEL).delete()
    rows = []
    for set_id, responses, scores, ranks, confidence in zip(
        consensus["set_ids"].tolist(),
        consensus["responses"].tolist(),
        consensus["scores"].tolist(),
        consensus["ranks"].tolist(),
        consensus["confidence"].tolist(),
        strict=True,
    ):
        if set_id in kept:
            continue  # an admin's review or a gold reference outranks the model
        rows.append(
            ResponseSetConsensus(
                response_set_id=set_id,
                ranks={str(r): int(rank) for r, rank in zip(responses, ranks, strict=True)},
                scores={str(r): round(float(score), 6) for r, score in zip(responses, scores, strict=True)},
                confidence=round(float(confidence), 6),
            )
        )
    ResponseSetConsensus.objects.bulk_create(rows, batch_size=5000)


def _store_labeler_quality(*, project: Project, labelers: dict[int, dict[str, Any]]) -> None:
    """Write every labeler's figures in a few statements (not two per labeler), then pause the
    unreliable ones. Runs inside the refresh's transaction."""
    users = get_user_model().objects.select_related("profile").in_bulk(list(labelers))
    initial = QualificationState.PENDING if project.qualification_items else QualificationState.NOT_REQUIRED
    existing = {
        q.labeler_id: q
        for q in LabelerQuality.objects.select_for_update().filter(project=project, labeler_id__in=users)
    }
    missing = [
        LabelerQuality(project=project, labeler_id=labeler_id, qualification=initial)
        for labeler_id in users
        if labeler_id not in existing
    ]
    LabelerQuality.objects.bulk_create(missing, ignore_conflicts=True)
    if missing:
        existing = {
            q.labeler_id: q
            for q in LabelerQuality.objects.select_for_update().filter(project=project, labeler_id__in=users)
        }
    fields = sorted({key for figures in labelers.values() for key in figures})
    for labeler_id, quality in existing.items():
        for key, value in labelers[labeler_id].items():
            setattr(quality, key, value)
    if existing and fields:  # a project without rankings has no figures; bulk_update() refuses no fields
        LabelerQuality.objects.bulk_update(list(existing.values()), fields, batch_size=500)
    for labeler_id, quality in existing.items():
        _auto_pause(project=project, user=users[labeler_id], quality=quality)


def _auto_pause(*, project: Project, user: Any, quality: LabelerQuality) -> None:
    """Pause a labeler whose reliability fell below the project's threshold, saying why."""
    threshold = project.reliability_threshold
    profile = getattr(user, "profile", None)
    if (
        not threshold
        or quality.override
        or quality.reliability is None
        or quality.comparisons < project.reliability_min_labels
        or profile is None
        or profile.status != LabelerStatus.ACTIVE
        or quality.reliability >= threshold
    ):
        return
    reason = (
        f"{AUTO_PAUSE_PREFIX} reliability {quality.reliability:.2f} on '{project.name}' is below "
        f"{threshold:.2f} (over {quality.comparisons} comparisons)."
    )
    # The loop decided: the audit row (``user_update``) has no actor, the reason and the project.
    user_update(user=user, status=LabelerStatus.PAUSED, status_reason=reason[:500], actor=None, project=project)
    logger.info("paused labeler %s: %s", user.pk, reason)


def agreement_refresh_schedule(*, project_id: int) -> None:
    """Called after a submit commits. Nothing is sent to the broker here: the beat sweep
    (``agreement_refresh_due``, every QUALITY_REFRESH_DELAY_S) picks up projects with new rankings,
    so bursts of submits collapse into one refresh and no delayed (countdown) message ever waits
    in a worker, where a broker outage used to kill it."""


def agreement_refresh_due() -> list[int]:
    """Active projects with rankings newer than their last agreement report (one query)."""
    if not settings.QUALITY_REFRESH_ON_SUBMIT:
        return []
    newest = Ranking.objects.filter(project=OuterRef("pk")).order_by("-id").values("id")[:1]
    reported = AgreementReport.objects.filter(project=OuterRef("pk")).order_by("-id").values("last_ranking_id")[:1]
    rows = (
        Project.objects.filter(is_active=True)
        .annotate(newest=Subquery(newest), reported=Coalesce(Subquery(reported), Value(0)))
        .filter(newest__gt=F("reported"))
        .values_list("id", flat=True)
    )
    return list(rows)


def labeler_quality_get(*, project: Project, labeler: AuthUser, lock: bool = False) -> LabelerQuality:
    """The labeler's standing on the project, created on first use (pending qualification when the
    project asks for it)."""
    qs = LabelerQuality.objects.select_for_update() if lock else LabelerQuality.objects
    initial = QualificationState.PENDING if project.qualification_items else QualificationState.NOT_REQUIRED
    try:
        quality, _ = qs.get_or_create(project=project, labeler=labeler, defaults={"qualification": initial})
    except IntegrityError:  # created by a concurrent request
        quality = qs.get(project=project, labeler=labeler)
    return quality


@transaction.atomic
def gold_result_record(
    *, project: Project, labeler: AuthUser, ranks: dict[int, int], gold_ranks: dict[str, int]
) -> LabelerQuality:
    """Score one gold ranking against its reference (pairs, a tie agrees only with a tie) and settle
    the labeler's qualification once they have ranked enough gold."""
    quality = labeler_quality_get(project=project, labeler=labeler, lock=True)
    agreed, total = rules.ranking_agreement(ranks, gold_ranks)
    quality.gold_items += 1
    quality.gold_pairs += total
    quality.gold_pairs_agreed += agreed
    if quality.qualification == QualificationState.PENDING and quality.gold_items >= project.qualification_items:
        accuracy = quality.gold_accuracy or 0.0
        quality.qualification = (
            QualificationState.QUALIFIED if accuracy >= project.qualification_threshold else QualificationState.FAILED
        )
    quality.save()
    return quality


def _not_an_evaluation_item(response_set: ResponseSet, what: str) -> None:
    """A human evaluation's items judge models: they are never gold, reviewed or relabelled."""
    if response_set.evaluation_id is not None:
        raise Conflict(
            f"set {response_set.pk} is an item of human evaluation {response_set.evaluation_id}; {what} only "
            "preference data.",
            code="evaluation_item",
        )


@transaction.atomic
def response_set_make_gold(
    *, response_set: ResponseSet, actor: AuthUser | None, ranks: dict[str, int] | None = None
) -> ResponseSet:
    """Make a set gold with a reference ranking, or, without one, with its consensus (which must be
    confident: at least the project's qualification threshold). One audit row, by ``actor``."""
    _not_an_evaluation_item(response_set, "gold sets are")
    source = "a reference ranking" if ranks is not None else "its consensus"
    if ranks is None:
        consensus = ResponseSetConsensus.objects.filter(response_set=response_set).first()
        if consensus is None:
            raise Conflict(
                "this set has no consensus yet; give a reference ranking.", field="ranks", code="no_consensus"
            )
        if not rules.consensus_good_as_gold(consensus.confidence, response_set.project.qualification_threshold):
            raise Conflict(
                f"the consensus confidence {consensus.confidence:.2f} is below "
                f"{response_set.project.qualification_threshold:.2f}; give a reference ranking.",
                field="ranks",
                code="consensus_too_weak",
            )
        ranks = consensus.ranks
    response_ids = [int(pk) for pk in response_set.items.values_list("response_id", flat=True)]
    try:
        reference = rules.ranks_validate(ranks, response_ids, response_set.project.k)
    except rules.RuleViolation as exc:
        raise ApplicationError(exc.message, field=exc.field, code=exc.code) from None
    clean = {str(k): v for k, v in reference.items()}
    before = {"is_gold": response_set.is_gold, "gold_ranks": response_set.gold_ranks}
    response_set.is_gold = True
    response_set.gold_ranks = clean
    response_set.save(update_fields=["is_gold", "gold_ranks"])
    audit_record(
        actor=actor,
        action=AuditAction.GOLD_SET,
        target=response_set,
        project=response_set.project,
        reason=f"Gold with {source} as the reference.",
        before=before,
        after={"is_gold": True, "gold_ranks": clean},
    )
    return response_set


@transaction.atomic
def review_accept(*, response_set: ResponseSet, ranking: Ranking, actor: AuthUser | None) -> ResponseSetConsensus:
    """An admin (``actor``) takes one labeler's ranking as the set's consensus; one audit row."""
    _not_an_evaluation_item(response_set, "review takes")
    if ranking.response_set_id != response_set.pk:
        raise ApplicationError("that ranking belongs to another response set.", field="ranking_id", code="invalid")
    previous = ResponseSetConsensus.objects.filter(response_set=response_set).first()
    before = (
        {}
        if previous is None
        else {"source": previous.source, "ranks": previous.ranks, "accepted_ranking_id": previous.accepted_ranking_id}
    )
    consensus, _ = ResponseSetConsensus.objects.update_or_create(
        response_set=response_set,
        defaults={
            "ranks": ranking.ranks,
            "scores": {},
            "confidence": 1.0,
            "source": ConsensusSource.REVIEW,
            "accepted_ranking": ranking,
        },
    )
    response_set.review_state = ReviewState.ACCEPTED
    response_set.save(update_fields=["review_state"])
    audit_record(
        actor=actor,
        action=AuditAction.REVIEW_ACCEPT,
        target=response_set,
        project=response_set.project,
        reason=f"Ranking {ranking.pk} by {ranking.labeler.get_username()} taken as the consensus.",
        before=before,
        after={"source": ConsensusSource.REVIEW.value, "ranks": ranking.ranks, "accepted_ranking_id": ranking.pk},
    )
    return consensus


@transaction.atomic
def review_request_more_labels(*, response_set: ResponseSet) -> ResponseSet:
    """One more labeler for this set: overlap + 1, back in the queue."""
    locked = ResponseSet.objects.select_for_update().get(pk=response_set.pk)
    _not_an_evaluation_item(locked, "review takes")
    locked.required_count += 1
    locked.status = ResponseSetStatus.OPEN
    locked.completed_at = None
    locked.review_state = ReviewState.MORE_LABELS
    locked.save(update_fields=["required_count", "status", "completed_at", "review_state"])
    return locked


@transaction.atomic
def labeler_quality_override(
    *, project: Project, labeler: AuthUser, override: bool, actor: AuthUser | None
) -> LabelerQuality:
    """An admin (``actor``) lets a labeler work despite the automatic checks (or withdraws that);
    one audit row, and a second (``user_update``) when that lifts an automatic pause."""
    quality = labeler_quality_get(project=project, labeler=labeler, lock=True)
    before = quality.override
    quality.override = override
    quality.save(update_fields=["override", "updated_at"])
    profile = getattr(labeler, "profile", None)
    if (
        override
        and profile is not None
        and profile.status == LabelerStatus.PAUSED
        and profile.status_reason.startswith(AUTO_PAUSE_PREFIX)
    ):
        user_update(user=labeler, status=LabelerStatus.ACTIVE, status_reason="", actor=actor, project=project)
    if before != override:
        audit_record(
            actor=actor,
            action=AuditAction.QUALITY_OVERRIDE,
            target=labeler,
            project=project,
            before={"override": before},
            after={"override": override},
        )
    return quality
