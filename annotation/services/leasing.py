"""Leasing response sets to labelers, skipping, expiring leases.

Concurrency: a lease locks the set's row (on PostgreSQL ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED``,
so concurrent labelers fan out over different sets, and the lock serialises leases of one set without
holding up the foreign-key checks of submits to it; on SQLite transactions are IMMEDIATE, which
serialises writers) and recounts the set's live leases in a fresh statement under that lock, so a
lease committed a moment earlier is always seen. A submit turns a live lease into a submission,
which leaves the slots taken unchanged; a submit near or past its lease's end takes the set's lock
first, and a late one recounts under it (``annotation.services.ranking``).

A lease is the request every labeler makes for every item, so its usual path (no lease held, no
gold) is four statements of fixed SQL (``config.db``): my leases, the candidate set with its
prompt, the set's responses with its live lease count, the insert.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from annotation import rules
from annotation.models import (
    Assignment,
    AssignmentStatus,
    GuidelineAcknowledgement,
    Project,
    Prompt,
    Response,
    ResponseSet,
    ResponseSetItem,
    ResponseSetStatus,
)
from annotation.services.text import text_unstorable
from config import db
from config.exceptions import ApplicationError, Conflict, NotFound
from labelers.models import LabelerStatus, Role
from labelers.types import AuthUser
from quality.models import QualificationState
from quality.services import labeler_quality_get

LEASE_ATTEMPTS = 20


def labeler_work_check(*, status: str | None, status_reason: str, project: Project) -> None:
    """Raise unless a labeler with ``status`` may work on ``project`` now: the one rule that lease,
    submit and skip all apply, so that a pause or a deactivation stops all three alike."""
    if status != LabelerStatus.ACTIVE:
        reason = f" ({status_reason})" if status_reason else ""
        raise ApplicationError(f"Your account is paused{reason}.", code="labeler_paused", status=403)
    if not project.is_active:
        raise Conflict(f"Project '{project.name}' is not active.", code="project_inactive")


def _check_labeler(*, user: AuthUser, project: Project) -> None:
    profile = getattr(user, "profile", None)
    if profile is None or profile.role != Role.LABELER:
        raise ApplicationError("Only labelers take items.", code="not_a_labeler", status=403)
    labeler_work_check(status=profile.status, status_reason=profile.status_reason, project=project)
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


def response_set_live_leases(response_set: ResponseSet, now: Any, *, exclude_assignment: int | None = None) -> int:
    """Live leases of ``response_set`` (its slots taken are these plus its submissions, see
    ``rules.slot_free``); exact only while its row is locked."""
    leases = _active_leases(response_set.pk, now)
    if exclude_assignment is not None:
        leases = leases.exclude(pk=exclude_assignment)
    return leases.count()


def _lease_insert() -> tuple[str, str]:
    """Columns and values of a new lease's INSERT: every field of ``Assignment`` but the key, in
    the model's order; a field the model gains and this does not fill fails at import."""
    values = {
        "response_set_id": "%(set)s",
        "labeler_id": "%(labeler)s",
        "status": db.literal(AssignmentStatus.LEASED),
        "display_order": "%(display_order)s",
        "guideline_id": "%(guideline)s",
        "leased_at": "%(now)s",
        "expires_at": "%(expires)s",
        "finished_at": "NULL",
        "skip_reason": "''",
    }
    fields = [field for field in Assignment._meta.concrete_fields if not field.primary_key]
    if {field.attname for field in fields} != set(values):
        raise RuntimeError(f"Assignment INSERT: fields {sorted({f.attname for f in fields} ^ set(values))} not matched")
    return ", ".join(str(f.column) for f in fields), ", ".join(values[f.attname] for f in fields)


_LEASE_COLUMNS, _LEASE_VALUES = _lease_insert()


@cache
def _sql() -> dict[str, str]:
    assignment, response_set = db.table(Assignment), db.table(ResponseSet)
    leased, expired = db.literal(AssignmentStatus.LEASED), db.literal(AssignmentStatus.EXPIRED)
    # Live leases of a set, counted through the partial index of live leases.
    live = (
        f"SELECT count(*) FROM {assignment} l "
        f"WHERE l.response_set_id = {{}} AND l.status = {leased} AND l.expires_at > %s"
    )
    # The set's own rules, written once in ``annotation.rules``: gold never fills, a free slot.
    fills = rules.sql_fills("s.is_gold")
    free = rules.sql_slot_free(
        required="s.required_count", submitted="s.submitted_count", live_leases=live.format("s.id")
    )

    def candidate(only: str) -> str:
        return f"""
            SELECT {db.columns(ResponseSet, "s")}, {db.columns(Prompt, "pr")}
            FROM {response_set} s JOIN {db.table(Prompt)} pr ON pr.id = s.prompt_id
            WHERE s.project_id = %s AND s.status = {db.literal(ResponseSetStatus.OPEN)} AND {fills} {only}
              AND NOT EXISTS (
                SELECT 1 FROM {assignment} m
                WHERE m.response_set_id = s.id AND m.labeler_id = %s AND m.status <> {expired})
              AND {free}
            ORDER BY s.submitted_count DESC, s.id
            LIMIT 1"""

    return {
        # My leases on the project that are live or lapsed; ``current``: live now.
        "held": f"""
            SELECT a.id, a.response_set_id, a.status, (a.status = {leased} AND a.expires_at > %s) AS current
            FROM {assignment} a JOIN {response_set} s ON s.id = a.response_set_id
            WHERE a.labeler_id = %s AND s.project_id = %s AND a.status IN ({leased}, {expired})
            ORDER BY a.leased_at""",
        # The open set nearest completion that I never had and that has a free slot, with its
        # prompt. The lock (added per backend) covers the set row only.
        "candidate": candidate(""),
        # The same among the sets of human evaluations, which go first: a gate waits for their votes.
        "candidate_evaluation": candidate("AND s.evaluation_id IS NOT NULL"),
        # The set's responses in position order and, in this fresh statement (under the set's
        # lock), how many live leases it has now.
        "responses": f"""
            SELECT ({live.format("%s")}), {db.columns(Response, "r")}
            FROM {db.table(ResponseSetItem)} i JOIN {db.table(Response)} r ON r.id = i.response_id
            WHERE i.response_set_id = %s ORDER BY i.position""",
        "insert": f"INSERT INTO {assignment} ({_LEASE_COLUMNS}) VALUES ({_LEASE_VALUES}) RETURNING id",
    }


def assignment_lease_next(*, project: Project, labeler: AuthUser) -> Assignment | None:
    """Lease the next response set to ``labeler``: their current lease if they hold one, else the
    open set nearest completion that they have never had, a human evaluation's sets before the
    others. ``None`` when no work is left."""
    _check_labeler(user=labeler, project=project)
    for _ in range(LEASE_ATTEMPTS):
        try:
            with transaction.atomic():
                outcome = _lease_once(project=project, labeler=labeler)
        except IntegrityError:  # the same labeler leasing twice at once: try again
            continue
        if outcome is not False:
            return outcome
    # Every candidate filled up under us several times in a row: the queue is nearly drained.
    return None


def _lease_once(*, project: Project, labeler: AuthUser) -> Assignment | Literal[False] | None:
    now = timezone.now()
    sql = _sql()
    held = db.fetch_all(sql["held"], [db.db_datetime(now), labeler.pk, project.pk])
    current = next((assignment_id for assignment_id, _, _, live in held if live), None)
    if current is not None:
        return (
            Assignment.objects.select_related("response_set__prompt", "guideline")
            .filter(pk=current, labeler=labeler)
            .get()
        )
    lapsed = [assignment_id for assignment_id, _, status, _ in held if status == AssignmentStatus.LEASED]
    if lapsed:  # my own lapsed leases go back to the pool (and may come back to me below)
        Assignment.objects.filter(pk__in=lapsed).update(status=AssignmentStatus.EXPIRED)
    mine_expired = {set_id: assignment_id for assignment_id, set_id, _, _ in held}

    qualifying = False
    if project.qualification_items:
        quality = labeler_quality_get(project=project, labeler=labeler)
        qualifying = quality.qualification == QualificationState.PENDING and not quality.override
    if qualifying or (project.gold_rate > 0 and random.random() < project.gold_rate):
        had_it = Assignment.objects.filter(response_set=OuterRef("pk"), labeler=labeler).exclude(
            status=AssignmentStatus.EXPIRED
        )
        gold = (
            ResponseSet.objects.filter(project=project, is_gold=True)
            .exclude(Exists(had_it))
            .select_related("prompt")
            .order_by("?")
            .first()
        )
        if gold is not None:  # gold sets never fill up (``rules.slot_free``); _assign checks anyway
            return _assign(project=project, labeler=labeler, response_set=gold, now=now, mine_expired=mine_expired)
        if qualifying:
            return None  # no gold left to qualify on: nothing this labeler may take yet

    params = [project.pk, labeler.pk, db.db_datetime(now)]
    first = project.evaluating  # a human evaluation's items first, while one collects votes
    if db.vendor() == "postgresql":
        row = (
            db.fetch_one(sql["candidate_evaluation"] + " FOR NO KEY UPDATE OF s SKIP LOCKED", params) if first else None
        )
        if row is None:
            row = db.fetch_one(sql["candidate"] + " FOR NO KEY UPDATE OF s SKIP LOCKED", params)
        if row is None:
            # Every open set may just be locked by other labelers' leases in flight: wait for one
            # instead of telling this labeler there is no work.
            row = db.fetch_one(sql["candidate"] + " FOR NO KEY UPDATE OF s", params)
    else:  # SQLite: the IMMEDIATE transaction already holds the database's write lock
        row = (db.fetch_one(sql["candidate_evaluation"], params) if first else None) or db.fetch_one(
            sql["candidate"], params
        )
    if row is None:
        return None
    response_set, end = db.instance(ResponseSet, row)
    response_set.prompt, _ = db.instance(Prompt, row, end)
    return _assign(project=project, labeler=labeler, response_set=response_set, now=now, mine_expired=mine_expired)


def _assign(
    *, project: Project, labeler: AuthUser, response_set: ResponseSet, now: datetime, mine_expired: dict[int, int]
) -> Assignment | Literal[False]:
    """Lease ``response_set`` (locked by the caller) to ``labeler``, renewing my own expired lease on
    it if I had one; ``False`` when its slots filled up since the candidate query."""
    rows = db.fetch_all(_sql()["responses"], [response_set.pk, db.db_datetime(now), response_set.pk])
    leased_now = rows[0][0] if rows else 0
    if not rules.slot_free(
        is_gold=response_set.is_gold,
        required=response_set.required_count,
        submitted=response_set.submitted_count,
        live_leases=leased_now,
    ):
        return False
    expires = now + timedelta(minutes=project.lease_minutes)
    existing = mine_expired.get(response_set.pk)
    if existing is not None:
        # Renew it, keeping the order I saw.
        Assignment.objects.filter(pk=existing).update(
            status=AssignmentStatus.LEASED, guideline=project.current_guideline, leased_at=now, expires_at=expires
        )
        assignment = Assignment.objects.get(pk=existing)
    else:
        order = [row[1] for row in rows]
        random.shuffle(order)
        row = db.fetch_one(
            _sql()["insert"],
            {
                "set": response_set.pk,
                "labeler": labeler.pk,
                "display_order": json.dumps(order),
                "guideline": project.current_guideline_id,
                "now": db.db_datetime(now),
                "expires": db.db_datetime(expires),
            },
        )
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        assignment = db.saved(
            Assignment(
                id=row[0],
                response_set_id=response_set.pk,
                labeler_id=labeler.pk,
                status=AssignmentStatus.LEASED,
                display_order=order,
                guideline_id=project.current_guideline_id,
                leased_at=now,
                expires_at=expires,
            )
        )
    responses = {response.pk: response for response in (db.instance(Response, row, 1)[0] for row in rows)}
    assignment.response_set = response_set
    assignment.guideline = project.current_guideline
    assignment.shown_responses = [responses[int(pk)] for pk in assignment.display_order]
    return assignment


@transaction.atomic
def assignment_skip(*, assignment_id: int, labeler: AuthUser, reason: str) -> Assignment:
    """Give an item back with a reason; the labeler will not get it again."""
    if not isinstance(reason, str) or not reason.strip():
        raise ApplicationError("reason: say why you skip this item.", code="invalid")
    if text_unstorable(reason):
        raise ApplicationError("reason: must not contain NUL characters or unpaired surrogates.", code="invalid")
    # The labeler's status and the project come in the same statement, read when the lock is taken.
    assignment = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("response_set__project", "labeler__profile")
        .filter(pk=assignment_id, labeler=labeler)
        .first()
    )
    if assignment is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    if assignment.status == AssignmentStatus.SUBMITTED:
        raise Conflict("This item was already submitted; it cannot be skipped.", code="already_submitted")
    if assignment.status != AssignmentStatus.SKIPPED:  # a repeat of an accepted skip is answered as accepted
        profile = getattr(assignment.labeler, "profile", None)
        labeler_work_check(
            status=profile.status if profile is not None else None,
            status_reason=profile.status_reason if profile is not None else "",
            project=assignment.response_set.project,
        )
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
