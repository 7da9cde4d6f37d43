"""Leasing response sets to labelers, submitting rankings, skipping.

Concurrency: every write that changes how many slots of a response set are taken (a new lease, a
submission) first locks that set's row. On PostgreSQL the lease query uses
``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent labelers fan out over different sets; on
SQLite transactions are IMMEDIATE, which serialises writers. Slots are recounted after the lock
is held, in a fresh statement, so a lease committed a moment earlier is always seen.
"""

from __future__ import annotations

import random
from datetime import timedelta
from itertools import combinations
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotation.models import (
    LIKERT_MAX,
    LIKERT_MIN,
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonOutcome,
    GuidelineAcknowledgement,
    PairwiseChoice,
    Project,
    Ranking,
    ResponseSet,
    ResponseSetStatus,
    TaskMode,
)
from annotation.quality.services import agreement_refresh_schedule, gold_result_record, labeler_quality_get
from config.exceptions import ApplicationError, Conflict, NotFound
from labelers.models import LabelerStatus, QualificationState, Role
from labelers.types import AuthUser

MAX_COMMENT = 5000
LEASE_ATTEMPTS = 20


def _check_labeler(*, user: AuthUser, project: Project) -> None:
    profile = getattr(user, "profile", None)
    if profile is None or profile.role != Role.LABELER:
        raise ApplicationError("Only labelers take items.", code="not_a_labeler", status=403)
    if profile.status != LabelerStatus.ACTIVE:
        reason = f" ({profile.status_reason})" if profile.status_reason else ""
        raise ApplicationError(f"Your account is paused{reason}.", code="labeler_paused", status=403)
    if not project.is_active:
        raise Conflict(f"Project '{project.name}' is not active.", code="project_inactive")
    quality = labeler_quality_get(project=project, labeler=user) if project.qualification_items else None
    if quality is not None and quality.qualification == QualificationState.FAILED and not quality.override:
        raise ApplicationError(
            f"You did not qualify for '{project.name}' (gold accuracy {quality.gold_accuracy:.0%}, "
            f"{project.qualification_threshold:.0%} needed). An admin can let you in.",
            code="not_qualified",
            status=403,
        )
    guideline = project.current_guideline
    if guideline is not None and not _acknowledged(guideline.pk, user.pk):
        raise Conflict(
            f"Read and acknowledge guideline version {guideline.version} before the next item.",
            code="guideline_not_acknowledged",
        )


# Acknowledgements are never withdrawn (a new version is a new guideline), so a positive answer
# can be remembered by this process: one query less on every lease.
_ACKNOWLEDGED: set[tuple[int, int]] = set()


def _acknowledged(guideline_id: int, user_id: int) -> bool:
    if (guideline_id, user_id) in _ACKNOWLEDGED:
        return True
    if not GuidelineAcknowledgement.objects.filter(guideline_id=guideline_id, user_id=user_id).exists():
        return False
    if len(_ACKNOWLEDGED) > 100_000:
        _ACKNOWLEDGED.clear()
    _ACKNOWLEDGED.add((guideline_id, user_id))
    return True


def _active_leases(response_set_id: Any, now: Any) -> Any:
    return Assignment.objects.filter(response_set=response_set_id, status=AssignmentStatus.LEASED, expires_at__gt=now)


def _slots_taken(response_set: ResponseSet, now: Any, *, exclude_assignment: int | None = None) -> int:
    leases = _active_leases(response_set.pk, now)
    if exclude_assignment is not None:
        leases = leases.exclude(pk=exclude_assignment)
    return response_set.submitted_count + leases.count()


def assignment_lease_next(*, project: Project, labeler: AuthUser) -> Assignment | None:
    """Lease the next response set to ``labeler``: their current lease if they hold one, else the
    open set nearest completion that they have never had. ``None`` when no work is left."""
    _check_labeler(user=labeler, project=project)
    for _ in range(LEASE_ATTEMPTS):
        try:
            with transaction.atomic():
                outcome = _lease_once(project=project, labeler=labeler)
        except IntegrityError:  # the same labeler leasing twice at once: try again
            continue
        if outcome is not False:
            return outcome  # type: ignore[return-value]
    # Every candidate filled up under us several times in a row: the queue is nearly drained.
    return None


def _lease_once(*, project: Project, labeler: AuthUser) -> Assignment | bool | None:
    now = timezone.now()
    held = list(
        Assignment.objects.filter(
            labeler=labeler,
            response_set__project=project,
            status__in=[AssignmentStatus.LEASED, AssignmentStatus.EXPIRED],
        )
        .select_related("response_set__prompt", "guideline")
        .order_by("leased_at")
    )
    current = next((a for a in held if a.status == AssignmentStatus.LEASED and a.expires_at > now), None)
    if current is not None:
        return current
    lapsed = [a.pk for a in held if a.status == AssignmentStatus.LEASED]
    if lapsed:  # my own lapsed leases go back to the pool (and may come back to me below)
        Assignment.objects.filter(pk__in=lapsed).update(status=AssignmentStatus.EXPIRED)
    mine_expired = {a.response_set_id: a for a in held}

    active_count = Subquery(
        Assignment.objects.filter(response_set=OuterRef("pk"), status=AssignmentStatus.LEASED, expires_at__gt=now)
        .values("response_set")
        .annotate(n=Count("id"))
        .values("n")[:1]
    )
    had_it = Assignment.objects.filter(response_set=OuterRef("pk"), labeler=labeler).exclude(
        status=AssignmentStatus.EXPIRED
    )
    qualifying = False
    if project.qualification_items:
        quality = labeler_quality_get(project=project, labeler=labeler)
        qualifying = quality.qualification == QualificationState.PENDING and not quality.override
    if qualifying or (project.gold_rate > 0 and random.random() < project.gold_rate):
        gold = ResponseSet.objects.filter(project=project, is_gold=True).exclude(Exists(had_it)).order_by("?").first()
        if gold is not None:
            return _assign(
                project=project, labeler=labeler, response_set=gold, now=now, existing=mine_expired.get(gold.pk)
            )
        if qualifying:
            return None  # no gold left to qualify on: nothing this labeler may take yet
    candidates = (
        ResponseSet.objects.filter(project=project, status=ResponseSetStatus.OPEN, is_gold=False)
        .exclude(Exists(had_it))
        .alias(active=Coalesce(active_count, Value(0)))
        .filter(required_count__gt=F("submitted_count") + F("active"))
        .select_related("prompt")
        .order_by("-submitted_count", "id")
    )
    candidate = candidates.select_for_update(skip_locked=True, of=("self",)).first()
    if candidate is None:
        # Every open set may just be locked by other labelers' leases in flight: wait for one
        # instead of telling this labeler there is no work.
        candidate = candidates.select_for_update(of=("self",)).first()
        if candidate is None:
            return None
    # Recount under the lock: a lease committed after this statement's snapshot is visible now.
    if _slots_taken(candidate, now) >= candidate.required_count:
        return False
    return _assign(
        project=project, labeler=labeler, response_set=candidate, now=now, existing=mine_expired.get(candidate.pk)
    )


def _assign(
    *, project: Project, labeler: AuthUser, response_set: ResponseSet, now: Any, existing: Assignment | None
) -> Assignment:
    """A new lease on ``response_set``, or ``existing`` (my own expired lease on it) renewed."""
    expires = now + timedelta(minutes=project.lease_minutes)
    if existing is None:
        order = list(response_set.items.values_list("response_id", flat=True))
        random.shuffle(order)
        return Assignment.objects.create(
            response_set=response_set,
            labeler=labeler,
            display_order=order,
            guideline=project.current_guideline,
            leased_at=now,
            expires_at=expires,
        )
    # Renew it, keeping the order I saw.
    existing.status = AssignmentStatus.LEASED
    existing.guideline = project.current_guideline
    existing.leased_at = now
    existing.expires_at = expires
    existing.save(update_fields=["status", "guideline", "leased_at", "expires_at"])
    return existing


def _validate_ranks(raw: Any, response_ids: list[int], k: int) -> dict[int, int]:
    if not isinstance(raw, dict) or not raw:
        raise ApplicationError("ranks: must be an object mapping each response id to its rank.", code="invalid")
    ranks: dict[int, int] = {}
    valid = set(response_ids)
    for key, value in raw.items():
        try:
            response_id = int(key)
        except (TypeError, ValueError):
            raise ApplicationError(f"ranks: '{key}' is not a response id.", code="invalid") from None
        if response_id not in valid:
            raise ApplicationError(f"ranks: response {response_id} is not in this response set.", code="invalid")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= k:
            raise ApplicationError(
                f"ranks.{response_id}: must be a whole number from 1 to {k}, got {value!r}.", code="invalid"
            )
        ranks[response_id] = value
    missing = [response_id for response_id in response_ids if response_id not in ranks]
    if missing:
        raise ApplicationError(
            f"ranks: response {missing[0]} has no rank; every response of the set needs one.", code="incomplete"
        )
    used = sorted(set(ranks.values()))
    if used != list(range(1, len(used) + 1)):
        raise ApplicationError(
            "ranks: ranks must be dense (1, 2, 3, ... with ties sharing a rank and no gaps); "
            f"got {', '.join(map(str, used))}.",
            code="invalid",
        )
    return ranks


def _validate_scores(raw: Any, response_ids: list[int], *, required: bool) -> dict[str, int]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ApplicationError("scores: must be an object mapping response ids to a score.", code="invalid")
    scores: dict[str, int] = {}
    for key, value in raw.items():
        if not str(key).isdigit() or int(key) not in response_ids:
            raise ApplicationError(f"scores: response {key} is not in this response set.", code="invalid")
        if isinstance(value, bool) or not isinstance(value, int) or not LIKERT_MIN <= value <= LIKERT_MAX:
            raise ApplicationError(
                f"scores.{key}: must be a whole number from {LIKERT_MIN} to {LIKERT_MAX}, got {value!r}.",
                code="invalid",
            )
        scores[str(int(key))] = value
    if required:
        for response_id in response_ids:
            if str(response_id) not in scores:
                raise ApplicationError(f"scores: response {response_id} needs a score.", code="incomplete")
    return scores


def _validate_flags(raw: Any, response_ids: list[int], allowed: list[str]) -> dict[str, list[str]]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ApplicationError("flags: must be an object mapping response ids to a list of flags.", code="invalid")
    flags: dict[str, list[str]] = {}
    for key, value in raw.items():
        if not str(key).isdigit() or int(key) not in response_ids:
            raise ApplicationError(f"flags: response {key} is not in this response set.", code="invalid")
        if not isinstance(value, list):
            raise ApplicationError(f"flags.{key}: must be a list of flag keys.", code="invalid")
        for flag in value:
            if flag not in allowed:
                raise ApplicationError(
                    f"flags.{key}: '{flag}' is not a flag of this project ({', '.join(allowed)}).", code="invalid"
                )
        if value:
            flags[str(int(key))] = sorted(set(value))
    return flags


def _comparisons(*, ranking: Ranking, ranks: dict[int, int], both_bad: bool) -> list[Comparison]:
    rows = []
    for a, b in combinations(sorted(ranks), 2):
        rank_a, rank_b = ranks[a], ranks[b]
        if rank_a < rank_b:
            outcome = ComparisonOutcome.A
        elif rank_b < rank_a:
            outcome = ComparisonOutcome.B
        else:
            outcome = ComparisonOutcome.TIE
        rows.append(
            Comparison(
                ranking=ranking,
                response_set_id=ranking.response_set_id,
                labeler_id=ranking.labeler_id,
                response_a_id=a,
                response_b_id=b,
                outcome=outcome,
                margin=abs(rank_a - rank_b),
                both_bad=both_bad,
            )
        )
    return rows


def ranking_submit(
    *,
    assignment_id: int,
    labeler: AuthUser,
    idempotency_key: str,
    ranks: Any = None,
    choice: str | None = None,
    scores: Any = None,
    flags: Any = None,
    comment: str = "",
    time_spent_ms: int = 0,
) -> tuple[Ranking, bool]:
    """Submit a ranking and derive its C(K,2) comparisons. Returns ``(ranking, created)``; a repeat
    with the same idempotency key returns the first ranking unchanged."""
    if not isinstance(idempotency_key, str) or not idempotency_key.strip() or len(idempotency_key) > 100:
        raise ApplicationError(
            "idempotency_key: a non-empty string of at most 100 characters is required.", code="invalid"
        )
    previous = Ranking.objects.filter(labeler=labeler, idempotency_key=idempotency_key).first()
    if previous is not None:
        if previous.assignment_id != assignment_id:
            raise Conflict("idempotency_key: already used for another assignment.", code="idempotency_key_reused")
        return previous, False
    try:
        with transaction.atomic():
            return _ranking_submit(
                assignment_id=assignment_id,
                labeler=labeler,
                idempotency_key=idempotency_key,
                ranks=ranks,
                choice=choice,
                scores=scores,
                flags=flags,
                comment=comment,
                time_spent_ms=time_spent_ms,
            )
    except IntegrityError:
        # A concurrent twin of this request won the race: answer with its ranking.
        previous = Ranking.objects.filter(labeler=labeler, idempotency_key=idempotency_key).first()
        if previous is not None and previous.assignment_id == assignment_id:
            return previous, False
        raise


def _ranking_submit(
    *,
    assignment_id: int,
    labeler: AuthUser,
    idempotency_key: str,
    ranks: Any,
    choice: str | None,
    scores: Any,
    flags: Any,
    comment: str,
    time_spent_ms: int,
) -> tuple[Ranking, bool]:
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("response_set__project")
        .filter(pk=assignment_id, labeler=labeler)
        .first()
    )
    if assignment is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    if assignment.status == AssignmentStatus.SUBMITTED:
        ranking = assignment.ranking
        if ranking.idempotency_key == idempotency_key:
            return ranking, False
        raise Conflict("This item was already submitted.", code="already_submitted")
    if assignment.status == AssignmentStatus.SKIPPED:
        raise Conflict("This item was skipped; it cannot be submitted.", code="already_skipped")

    project = assignment.response_set.project
    response_ids = [int(response_id) for response_id in assignment.display_order]

    # Validate the payload before the slot check so a bad payload always says what is wrong.
    pairwise_choice = ""
    if project.task_mode == TaskMode.PAIRWISE:
        if choice not in PairwiseChoice.values:
            raise ApplicationError(
                f"choice: must be one of {', '.join(PairwiseChoice.values)}, got {choice!r}.", code="invalid"
            )
        if ranks is not None:
            raise ApplicationError("ranks: pairwise projects take 'choice', not 'ranks'.", code="invalid")
        first, second = response_ids  # A and B as this labeler saw them
        pairwise_choice = choice
        ranks_by_id = {
            PairwiseChoice.A: {first: 1, second: 2},
            PairwiseChoice.B: {first: 2, second: 1},
        }.get(choice, {first: 1, second: 1})  # type: ignore[call-overload]
    else:
        if choice is not None:
            raise ApplicationError("choice: only pairwise projects take a choice; send 'ranks'.", code="invalid")
        ranks_by_id = _validate_ranks(ranks, response_ids, project.k)
    clean_scores = _validate_scores(scores, response_ids, required=project.require_likert)
    clean_flags = _validate_flags(flags, response_ids, project.flag_keys)
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise ApplicationError(f"comment: must be text of at most {MAX_COMMENT} characters.", code="invalid")
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        raise ApplicationError("time_spent_ms: must be a non-negative whole number.", code="invalid")

    response_set = ResponseSet.objects.select_for_update().get(pk=assignment.response_set_id)
    now = timezone.now()
    late = assignment.status == AssignmentStatus.EXPIRED or assignment.expires_at <= now
    if late and not response_set.is_gold:  # gold sets never fill up
        still_needed = response_set.status == ResponseSetStatus.OPEN and (
            _slots_taken(response_set, now, exclude_assignment=assignment.pk) < response_set.required_count
        )
        if not still_needed:
            raise Conflict(
                f"Your lease on this item expired at {assignment.expires_at:%H:%M:%S} UTC and the item already has "
                f"the {response_set.required_count} rankings it needs; this ranking was not saved.",
                code="lease_expired",
            )

    ranking = Ranking.objects.create(
        assignment=assignment,
        response_set=response_set,
        labeler=labeler,
        guideline=assignment.guideline,
        ranks={str(response_id): rank for response_id, rank in sorted(ranks_by_id.items())},
        display_order=assignment.display_order,
        pairwise_choice=pairwise_choice,
        scores=clean_scores,
        flags=clean_flags,
        comment=comment.strip(),
        time_spent_ms=min(time_spent_ms, 2**31 - 1),
        idempotency_key=idempotency_key,
        submitted_late=late,
    )
    Comparison.objects.bulk_create(
        _comparisons(ranking=ranking, ranks=ranks_by_id, both_bad=pairwise_choice == PairwiseChoice.BOTH_BAD)
    )
    assignment.status = AssignmentStatus.SUBMITTED
    assignment.finished_at = now
    assignment.save(update_fields=["status", "finished_at"])
    if response_set.is_gold:
        gold_result_record(
            project=project, labeler=labeler, ranks=ranks_by_id, gold_ranks=response_set.gold_ranks or {}
        )
        return ranking, True
    # The row is locked (select_for_update above): its count is exact.
    response_set.submitted_count += 1
    fields = ["submitted_count"]
    if response_set.submitted_count >= response_set.required_count:
        response_set.status = ResponseSetStatus.COMPLETE
        response_set.completed_at = now
        fields += ["status", "completed_at"]
    response_set.save(update_fields=fields)
    project_id = project.pk
    transaction.on_commit(lambda: agreement_refresh_schedule(project_id=project_id))
    return ranking, True


@transaction.atomic
def assignment_skip(*, assignment_id: int, labeler: AuthUser, reason: str) -> Assignment:
    """Give an item back with a reason; the labeler will not get it again."""
    if not isinstance(reason, str) or not reason.strip():
        raise ApplicationError("reason: say why you skip this item.", code="invalid")
    assignment = Assignment.objects.select_for_update().filter(pk=assignment_id, labeler=labeler).first()
    if assignment is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    if assignment.status == AssignmentStatus.SUBMITTED:
        raise Conflict("This item was already submitted; it cannot be skipped.", code="already_submitted")
    if assignment.status != AssignmentStatus.SKIPPED:
        assignment.status = AssignmentStatus.SKIPPED
        assignment.skip_reason = reason.strip()[:1000]
        assignment.finished_at = timezone.now()
        assignment.save(update_fields=["status", "skip_reason", "finished_at"])
    return assignment


def leases_expire() -> int:
    """Mark lapsed leases expired (they already stopped counting when they lapsed)."""
    return Assignment.objects.filter(status=AssignmentStatus.LEASED, expires_at__lte=timezone.now()).update(
        status=AssignmentStatus.EXPIRED
    )
