"""Submitting a ranking: validation, the ranking row and its C(K,2) comparisons, all or nothing.

Every labeler submits every item, so the usual case is fixed SQL (``config.db``). On PostgreSQL a
submit on a live lease (not gold) is two statements and no explicit transaction: read the
assignment with its set and project, validate, then one statement that claims the assignment
(``UPDATE ... WHERE status = 'leased' AND expires_at > now``), inserts the ranking and its
comparisons and counts the submission on the set. The claim makes it safe without a lock: a
concurrent twin, skip or expiry makes it claim nothing, and the submit then takes the locked path.

The locked path handles everything else (repeats, late submits, gold, SQLite): lock the assignment,
check, write (the same statement on PostgreSQL, four on SQLite), in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import combinations
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import (
    LIKERT_MAX,
    LIKERT_MIN,
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonOutcome,
    PairwiseChoice,
    Project,
    Ranking,
    ResponseSet,
    ResponseSetStatus,
    TaskMode,
)
from annotation.quality.services import agreement_refresh_schedule, gold_result_record
from annotation.services.leasing import slots_taken
from config import db
from config.exceptions import ApplicationError, Conflict, NotFound
from labelers.types import AuthUser

MAX_COMMENT = 5000


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


def _comparison_rows(ranks: dict[int, int]) -> list[tuple[int, int, str, int]]:
    """``(response_a, response_b, outcome, margin)`` for every unordered pair, ``a`` the lower id."""
    rows = []
    for a, b in combinations(sorted(ranks), 2):
        rank_a, rank_b = ranks[a], ranks[b]
        if rank_a < rank_b:
            outcome = ComparisonOutcome.A
        elif rank_b < rank_a:
            outcome = ComparisonOutcome.B
        else:
            outcome = ComparisonOutcome.TIE
        rows.append((a, b, outcome.value, abs(rank_a - rank_b)))
    return rows


_RANKING_COLUMNS = (
    "assignment_id, response_set_id, labeler_id, guideline_id, ranks, display_order, pairwise_choice, scores, "
    "flags, comment, time_spent_ms, idempotency_key, submitted_late, created_at"
)
_RANKING_VALUES = (
    "%(assignment)s, %(set)s, %(labeler)s, %(guideline)s, %(ranks)s, %(display_order)s, %(choice)s, %(scores)s, "
    "%(flags)s, %(comment)s, %(time_spent_ms)s, %(key)s, %(late)s, %(now)s"
)
_COMPARISON_COLUMNS = (
    "ranking_id, response_set_id, labeler_id, response_a_id, response_b_id, outcome, margin, both_bad, created_at"
)


@cache
def _sql() -> dict[str, str]:
    assignment, response_set, ranking = db.table(Assignment), db.table(ResponseSet), db.table(Ranking)
    submitted, complete = db.literal(AssignmentStatus.SUBMITTED), db.literal(ResponseSetStatus.COMPLETE)
    # The set completes with its last slot; gold sets never fill up.
    count = f"""
        UPDATE {response_set} SET
          submitted_count = submitted_count + 1,
          status = CASE WHEN submitted_count + 1 >= required_count THEN {complete} ELSE status END,
          completed_at = CASE WHEN submitted_count + 1 >= required_count THEN %(now)s ELSE completed_at END
        WHERE id = %(set)s AND NOT is_gold"""
    read = f"""
        SELECT {db.columns(Assignment, "a")}, {db.columns(ResponseSet, "s")}, {db.columns(Project, "p")}
        FROM {assignment} a
          JOIN {response_set} s ON s.id = a.response_set_id
          JOIN {db.table(Project)} p ON p.id = s.project_id
        WHERE a.id = %s AND a.labeler_id = %s"""
    if db.vendor() != "postgresql":
        return {
            "read": read,
            "lock": read,  # SQLite: the IMMEDIATE transaction holds the database's write lock
            "ranking": f"INSERT INTO {ranking} ({_RANKING_COLUMNS}) VALUES ({_RANKING_VALUES}) RETURNING id",
            "comparisons": f"INSERT INTO {db.table(Comparison)} ({_COMPARISON_COLUMNS}) VALUES ",
            "submitted": (
                f"UPDATE {assignment} SET status = {submitted}, finished_at = %(now)s WHERE id = %(assignment)s"
            ),
            "count": count,
        }
    # One statement: claim the assignment (a live lease, or one the locked path let in late), and
    # only if that claimed it, insert the ranking and its comparisons and count the submission.
    # The pairs arrive as arrays, so the statement is the same for every K and is prepared once.
    write = f"""
        WITH claimed AS (
            UPDATE {assignment} SET status = {submitted}, finished_at = %(now)s
            WHERE id = %(assignment)s AND labeler_id = %(labeler)s
              AND status IN ({db.literal(AssignmentStatus.LEASED)}, {db.literal(AssignmentStatus.EXPIRED)})
              AND (expires_at > %(now)s OR %(late)s)
            RETURNING id),
        ranking AS (
            INSERT INTO {ranking} ({_RANKING_COLUMNS}) SELECT {_RANKING_VALUES} FROM claimed RETURNING id),
        comparisons AS (
            INSERT INTO {db.table(Comparison)} ({_COMPARISON_COLUMNS})
            SELECT ranking.id, %(set)s, %(labeler)s, pair.a, pair.b, pair.outcome, pair.margin, %(both_bad)s, %(now)s
            FROM ranking, unnest(%(a)s::bigint[], %(b)s::bigint[], %(outcome)s::varchar[], %(margin)s::int[])
                 AS pair (a, b, outcome, margin)),
        counted AS ({count} AND EXISTS (SELECT 1 FROM claimed))
        SELECT id FROM ranking"""
    return {"read": read, "lock": read + " FOR NO KEY UPDATE OF a", "write": write}


@dataclass(frozen=True)
class _Loaded:
    assignment: Assignment
    response_set: ResponseSet
    project: Project


def _load(*, assignment_id: int, labeler: AuthUser, lock: bool) -> _Loaded | None:
    if not db.fits_id(assignment_id):
        return None
    row = db.fetch_one(_sql()["lock" if lock else "read"], [assignment_id, labeler.pk])
    if row is None:
        return None
    assignment, end = db.instance(Assignment, row)
    response_set, end = db.instance(ResponseSet, row, end)
    project, _ = db.instance(Project, row, end)
    return _Loaded(assignment, response_set, project)


@dataclass(frozen=True)
class _Clean:
    ranks: dict[int, int]  # response id -> dense rank
    choice: str  # the pairwise choice, "" in rank mode
    scores: dict[str, int]
    flags: dict[str, list[str]]
    comment: str
    time_spent_ms: int


def _clean(
    *, loaded: _Loaded, ranks: Any, choice: str | None, scores: Any, flags: Any, comment: Any, time_spent_ms: Any
) -> _Clean:
    """The payload checked against the set as this labeler saw it; raises on the first problem."""
    project = loaded.project
    response_ids = [int(response_id) for response_id in loaded.assignment.display_order]
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
    return _Clean(
        ranks_by_id, pairwise_choice, clean_scores, clean_flags, comment.strip(), min(time_spent_ms, 2**31 - 1)
    )


def _write(*, loaded: _Loaded, labeler: AuthUser, key: str, clean: _Clean, now: datetime, late: bool) -> Ranking | None:
    """Insert the ranking and its comparisons, mark the assignment submitted and count it on its
    set. ``None`` when (PostgreSQL, unlocked) the assignment was no longer a live lease to claim."""
    assignment, response_set = loaded.assignment, loaded.response_set
    ranking = Ranking(
        assignment_id=assignment.pk,
        response_set_id=response_set.pk,
        labeler_id=labeler.pk,
        guideline_id=assignment.guideline_id,
        ranks={str(response_id): rank for response_id, rank in sorted(clean.ranks.items())},
        display_order=assignment.display_order,
        pairwise_choice=clean.choice,
        scores=clean.scores,
        flags=clean.flags,
        comment=clean.comment,
        time_spent_ms=clean.time_spent_ms,
        idempotency_key=key,
        submitted_late=late,
        created_at=now,
    )
    params = {
        "assignment": assignment.pk,
        "set": response_set.pk,
        "labeler": labeler.pk,
        "guideline": ranking.guideline_id,
        "ranks": json.dumps(ranking.ranks),
        "display_order": json.dumps(ranking.display_order),
        "choice": ranking.pairwise_choice,
        "scores": json.dumps(ranking.scores),
        "flags": json.dumps(ranking.flags),
        "comment": ranking.comment,
        "time_spent_ms": ranking.time_spent_ms,
        "key": key,
        "late": late,
        "now": db.db_datetime(now),
        "both_bad": clean.choice == PairwiseChoice.BOTH_BAD,
    }
    pairs = _comparison_rows(clean.ranks)
    sql = _sql()
    if "write" in sql:
        a, b, outcome, margin = (list(column) for column in zip(*pairs, strict=True))
        row = db.fetch_one(sql["write"], {**params, "a": a, "b": b, "outcome": outcome, "margin": margin})
        if row is None:
            return None
        ranking.id = row[0]
    else:
        row = db.fetch_one(sql["ranking"], params)
        assert row is not None
        ranking.id = row[0]
        common = (ranking.id, response_set.pk, labeler.pk)
        db.execute(
            sql["comparisons"] + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(pairs)),
            [value for pair in pairs for value in (*common, *pair, params["both_bad"], params["now"])],
        )
        db.execute(sql["submitted"], params)
        db.execute(sql["count"], params)
    if not response_set.is_gold:
        project_id = response_set.project_id
        transaction.on_commit(lambda: agreement_refresh_schedule(project_id=project_id))
    return db.saved(ranking)


def ranking_submit(
    *,
    assignment_id: int,
    labeler: AuthUser,
    idempotency_key: str | None,
    ranks: Any = None,
    choice: str | None = None,
    scores: Any = None,
    flags: Any = None,
    comment: Any = "",
    time_spent_ms: Any = 0,
) -> tuple[Ranking, bool]:
    """Submit a ranking and derive its C(K,2) comparisons. Returns ``(ranking, created)``; a repeat
    with the same idempotency key returns the first ranking unchanged."""
    if idempotency_key is None:
        raise ApplicationError("idempotency_key: This field is required.", code="invalid")
    if not isinstance(idempotency_key, str) or not idempotency_key.strip() or len(idempotency_key) > 100:
        raise ApplicationError(
            "idempotency_key: a non-empty string of at most 100 characters is required.", code="invalid"
        )
    payload = {
        "ranks": ranks,
        "choice": choice,
        "scores": scores,
        "flags": flags,
        "comment": comment,
        "time_spent_ms": time_spent_ms,
    }
    try:
        if "write" in _sql():
            if transaction.get_connection().in_atomic_block:
                # A savepoint, so that a failed statement leaves the caller's transaction usable.
                with transaction.atomic():
                    ranking = _submit_unlocked(
                        assignment_id=assignment_id, labeler=labeler, key=idempotency_key, payload=payload
                    )
            else:
                ranking = _submit_unlocked(
                    assignment_id=assignment_id, labeler=labeler, key=idempotency_key, payload=payload
                )
            if ranking is not None:
                return ranking, True
        with transaction.atomic():
            return _submit_locked(assignment_id=assignment_id, labeler=labeler, key=idempotency_key, payload=payload)
    except IntegrityError:
        # The key was used for another ranking of mine (a repeat of an earlier submit, or a
        # concurrent twin of this one that won the race).
        previous = Ranking.objects.filter(labeler=labeler, idempotency_key=idempotency_key).first()
        if previous is None:
            raise
        if previous.assignment_id != assignment_id:
            raise Conflict(
                "idempotency_key: already used for another assignment.", code="idempotency_key_reused"
            ) from None
        return previous, False


def _submit_unlocked(*, assignment_id: int, labeler: AuthUser, key: str, payload: dict[str, Any]) -> Ranking | None:
    """The usual submit on PostgreSQL (see the module's docstring); ``None`` sends it down the
    locked path: not a live lease of mine, gold, or claimed by someone else in the meantime."""
    loaded = _load(assignment_id=assignment_id, labeler=labeler, lock=False)
    now = timezone.now()
    if (
        loaded is None
        or loaded.assignment.status != AssignmentStatus.LEASED
        or loaded.assignment.expires_at <= now
        or loaded.response_set.is_gold
    ):
        return None
    clean = _clean(loaded=loaded, **payload)
    return _write(loaded=loaded, labeler=labeler, key=key, clean=clean, now=now, late=False)


def _submit_locked(*, assignment_id: int, labeler: AuthUser, key: str, payload: dict[str, Any]) -> tuple[Ranking, bool]:
    loaded = _load(assignment_id=assignment_id, labeler=labeler, lock=True)
    if loaded is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    assignment = loaded.assignment
    if assignment.status == AssignmentStatus.SUBMITTED:
        ranking = Ranking.objects.get(assignment_id=assignment.pk)
        if ranking.idempotency_key == key:
            return ranking, False
        if Ranking.objects.filter(labeler=labeler, idempotency_key=key).exists():
            raise Conflict("idempotency_key: already used for another assignment.", code="idempotency_key_reused")
        raise Conflict("This item was already submitted.", code="already_submitted")
    if assignment.status == AssignmentStatus.SKIPPED:
        raise Conflict("This item was skipped; it cannot be submitted.", code="already_skipped")

    # Validate the payload before the slot check so a bad payload always says what is wrong.
    clean = _clean(loaded=loaded, **payload)
    now = timezone.now()
    late = assignment.status == AssignmentStatus.EXPIRED or assignment.expires_at <= now
    if late and not loaded.response_set.is_gold:  # gold sets never fill up
        # My slot may have gone to someone else: recount with the set locked.
        response_set = ResponseSet.objects.select_for_update(no_key=True).get(pk=loaded.response_set.pk)
        still_needed = response_set.status == ResponseSetStatus.OPEN and (
            slots_taken(response_set, now, exclude_assignment=assignment.pk) < response_set.required_count
        )
        if not still_needed:
            raise Conflict(
                f"Your lease on this item expired at {assignment.expires_at:%H:%M:%S} UTC and the item already has "
                f"the {response_set.required_count} rankings it needs; this ranking was not saved.",
                code="lease_expired",
            )
    written = _write(loaded=loaded, labeler=labeler, key=key, clean=clean, now=now, late=late)
    assert written is not None  # the assignment is locked: the claim cannot miss
    if loaded.response_set.is_gold:
        gold_result_record(
            project=loaded.project,
            labeler=labeler,
            ranks=clean.ranks,
            gold_ranks=loaded.response_set.gold_ranks or {},
        )
    return written, True
