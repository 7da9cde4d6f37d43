"""Submitting a ranking: validation, the ranking row and its C(K,2) comparisons, all or nothing.

Every labeler submits every item, so the usual case is fixed SQL (``config.db``). On PostgreSQL a
submit on a lease with more than ``CLAIM_MARGIN`` left to run (not gold) is two statements and no
explicit transaction: read the assignment with its set and project, validate, then one statement
that claims the assignment (``UPDATE ... WHERE status = 'leased' AND expires_at > now + margin``),
inserts the ranking and its comparisons and counts the submission on the set. The claim makes it
safe without locks: a concurrent twin or a skip makes it claim nothing, and the submit then takes
the locked path. The margin keeps the lease live until the statement is done: a lease elsewhere
could otherwise see this one lapse, give its slot away, and fill the set past its overlap.

The locked path handles everything else (repeats, leases near or past their end, gold, SQLite): lock
the set and the assignment, take the time, check, write (the same statement on PostgreSQL, four on
SQLite), in one transaction, as a lease does.

A paused labeler or an inactive project submits nothing (``leasing.labeler_work_check``, the rule
a lease applies). The read brings the labeler's status with the assignment, and on PostgreSQL the
claim checks both again, so a pause committed after the read makes the claim take nothing: the
submit is refused without writing, never written and then refused.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, JSONField, Model, Subquery
from django.utils import timezone

from annotation import rules
from annotation.models import (
    LIKERT_MAX,
    LIKERT_MIN,
    Assignment,
    AssignmentStatus,
    Comparison,
    PairwiseChoice,
    Project,
    Ranking,
    ResponseSet,
    ResponseSetStatus,
    TaskMode,
)
from annotation.services.leasing import labeler_work_check, response_set_live_leases
from annotation.services.text import text_unstorable
from config import db
from config.exceptions import ApplicationError, Conflict, NotFound
from labelers.models import LabelerProfile, LabelerStatus
from labelers.types import AuthUser
from quality.services import agreement_refresh_schedule, gold_result_record

MAX_COMMENT = 5000
MAX_KEY = 100
# A submit whose lease ends sooner than this takes the locked path (see the module's docstring).
CLAIM_MARGIN = timedelta(seconds=30)


def _invalid(field: str, message: str, *, code: str = "invalid") -> ApplicationError:
    """A 400 naming the field, in the API's shape for field errors."""
    return ApplicationError(f"{field}: {message}", code=code, errors=[{"field": field, "message": message}])


def _violation(exc: rules.RuleViolation) -> ApplicationError:
    return _invalid(exc.field, exc.message, code=exc.code)


def _validate_scores(raw: Any, response_ids: list[int], *, required: bool) -> dict[str, int]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _invalid("scores", "must be an object mapping response ids to a score.")
    scores: dict[str, int] = {}
    for key, value in raw.items():
        response_id = rules.response_id(key)
        if response_id is None or response_id not in response_ids:
            raise _invalid("scores", f"response {key} is not in this response set.")
        if isinstance(value, bool) or not isinstance(value, int) or not LIKERT_MIN <= value <= LIKERT_MAX:
            raise _invalid(f"scores.{key}", f"must be a whole number from {LIKERT_MIN} to {LIKERT_MAX}, got {value!r}.")
        scores[str(response_id)] = value
    if required:
        for response_id in response_ids:
            if str(response_id) not in scores:
                raise _invalid("scores", f"response {response_id} needs a score.", code="incomplete")
    return scores


def _insert_columns(model: type[Model], values: dict[str, str]) -> tuple[str, str]:
    """``(columns, values)`` of an INSERT of ``model``: every concrete field but the key, in the
    model's order, each with its value expression from ``values`` (keyed by attname). A field the
    model gained and the statement does not fill fails at import, not at the first submit."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    names = {field.attname for field in fields}
    if names != set(values):
        raise RuntimeError(f"{model.__name__} INSERT: fields {sorted(names ^ set(values))} not matched")
    return ", ".join(str(field.column) for field in fields), ", ".join(values[field.attname] for field in fields)


# Named parameters of the ranking's INSERT are its fields' attnames (``_ranking_params``).
_RANKING_COLUMNS, _RANKING_VALUES = _insert_columns(
    Ranking,
    {field.attname: f"%({field.attname})s" for field in Ranking._meta.concrete_fields if not field.primary_key},
)
# A comparison per pair: the PostgreSQL statement reads the pairs from arrays (``pair``); the
# SQLite one takes a row of values per pair (``_comparison_values``).
_COMPARISON_COLUMNS, _COMPARISON_VALUES = _insert_columns(
    Comparison,
    {
        "ranking_id": "ranking.id",
        "response_set_id": "%(set)s",
        "labeler_id": "%(labeler)s",
        "response_a_id": "pair.a",
        "response_b_id": "pair.b",
        "outcome": "pair.outcome",
        "margin": "pair.margin",
        "both_bad": "%(both_bad)s",
        "created_at": "%(now)s",
    },
)
_COMPARISON_ROW = "(" + ", ".join(["%s"] * len(_COMPARISON_COLUMNS.split(", "))) + ")"


def _comparison_values(
    *, ranking_id: int, set_id: int, labeler_id: int, pair: tuple[int, int, str, int], both_bad: bool, now: Any
) -> list[Any]:
    """One comparison's values in ``_COMPARISON_COLUMNS`` order (the SQLite statement)."""
    a, b, outcome, margin = pair
    by_field = {
        "ranking_id": ranking_id,
        "response_set_id": set_id,
        "labeler_id": labeler_id,
        "response_a_id": a,
        "response_b_id": b,
        "outcome": outcome,
        "margin": margin,
        "both_bad": both_bad,
        "created_at": now,
    }
    return [by_field[f.attname] for f in Comparison._meta.concrete_fields if not f.primary_key]


def _ranking_params(ranking: Ranking) -> dict[str, Any]:
    """The ranking's fields as parameters of its INSERT, keyed by attname."""
    params = {}
    for field in Ranking._meta.concrete_fields:
        if field.primary_key:
            continue
        value = getattr(ranking, field.attname)
        if isinstance(field, JSONField):
            value = json.dumps(value)
        elif isinstance(field, DateTimeField):
            value = db.db_datetime(value)
        params[field.attname] = value
    return params


@cache
def _sql(vendor: str) -> dict[str, str]:
    assignment, response_set, ranking = db.table(Assignment), db.table(ResponseSet), db.table(Ranking)
    submitted, complete = db.literal(AssignmentStatus.SUBMITTED), db.literal(ResponseSetStatus.COMPLETE)
    leased, expired = db.literal(AssignmentStatus.LEASED), db.literal(AssignmentStatus.EXPIRED)
    # An open set completes with its last slot (a retired one stays retired); gold sets never fill up.
    completes = f"status = {db.literal(ResponseSetStatus.OPEN)} AND " + rules.sql_set_complete(
        required="required_count", submitted="submitted_count + 1"
    )
    count = f"""
        UPDATE {response_set} SET
          submitted_count = submitted_count + 1,
          status = CASE WHEN {completes} THEN {complete} ELSE status END,
          completed_at = CASE WHEN {completes} THEN %(now)s ELSE completed_at END
        WHERE id = %(set)s AND {rules.sql_fills("is_gold")}"""
    # Locks (on the locked path) take the set before the assignment, as a lease does: no deadlock.
    # The labeler's working status comes with the assignment: no statement of its own.
    read = f"""
        SELECT {db.columns(Assignment, "a")}, {db.columns(ResponseSet, "s")}, {db.columns(Project, "p")},
               lp.status, lp.status_reason
        FROM {response_set} s
          JOIN {assignment} a ON a.response_set_id = s.id
          JOIN {db.table(Project)} p ON p.id = s.project_id
          LEFT JOIN {db.table(LabelerProfile)} lp ON lp.user_id = a.labeler_id
        WHERE a.id = %s AND a.labeler_id = %s"""
    if vendor != "postgresql":
        return {
            "read": read,
            "lock": read,  # SQLite: the IMMEDIATE transaction holds the database's write lock
            "ranking": f"INSERT INTO {ranking} ({_RANKING_COLUMNS}) VALUES ({_RANKING_VALUES}) RETURNING id",
            "comparisons": f"INSERT INTO {db.table(Comparison)} ({_COMPARISON_COLUMNS}) VALUES ",  # + rows
            "submitted": (
                f"UPDATE {assignment} SET status = {submitted}, finished_at = %(now)s WHERE id = %(assignment)s"
            ),
            "count": count,
        }
    # One statement: claim the assignment (a lease live past ``live_after``, or one the locked path
    # let in late) while the labeler is active and the project is too, and only if that claimed it,
    # insert the ranking and its comparisons and count the submission. The pairs arrive as arrays,
    # so the statement is the same for every K and is prepared once.
    write = f"""
        WITH claimed AS (
            UPDATE {assignment} SET status = {submitted}, finished_at = %(now)s
            WHERE id = %(assignment)s AND labeler_id = %(labeler)s
              AND ((status = {leased} AND expires_at > %(live_after)s)
                   OR (%(late)s AND status IN ({leased}, {expired})))
              AND EXISTS (SELECT 1 FROM {db.table(LabelerProfile)} lp
                          WHERE lp.user_id = %(labeler)s AND lp.status = {db.literal(LabelerStatus.ACTIVE)})
              AND EXISTS (SELECT 1 FROM {db.table(Project)} p WHERE p.id = %(project)s AND p.is_active)
            RETURNING id),
        ranking AS (
            INSERT INTO {ranking} ({_RANKING_COLUMNS}) SELECT {_RANKING_VALUES} FROM claimed RETURNING id),
        comparisons AS (
            INSERT INTO {db.table(Comparison)} ({_COMPARISON_COLUMNS})
            SELECT {_COMPARISON_VALUES}
            FROM ranking, unnest(%(a)s::bigint[], %(b)s::bigint[], %(outcome)s::varchar[], %(margin)s::int[])
                 AS pair (a, b, outcome, margin)),
        counted AS ({count} AND EXISTS (SELECT 1 FROM claimed))
        SELECT id FROM ranking"""
    return {"read": read, "lock": read + " FOR NO KEY UPDATE OF s, a", "write": write}


@dataclass(frozen=True)
class _Loaded:
    assignment: Assignment
    response_set: ResponseSet
    project: Project
    labeler_status: str | None  # ``None``: no profile
    labeler_status_reason: str

    def check_may_work(self) -> None:
        """Raise unless this labeler may submit on this project now (paused, inactive project)."""
        labeler_work_check(
            status=self.labeler_status, status_reason=self.labeler_status_reason or "", project=self.project
        )

    @property
    def may_work(self) -> bool:
        return self.labeler_status == LabelerStatus.ACTIVE and self.project.is_active


def _load(*, assignment_id: int, labeler: AuthUser, lock: bool) -> _Loaded | None:
    if not db.fits_id(assignment_id):
        return None
    row = db.fetch_one(_sql(db.vendor())["lock" if lock else "read"], [assignment_id, labeler.pk])
    if row is None:
        return None
    assignment, end = db.instance(Assignment, row)
    response_set, end = db.instance(ResponseSet, row, end)
    project, end = db.instance(Project, row, end)
    return _Loaded(assignment, response_set, project, row[end], row[end + 1] or "")


@dataclass(frozen=True)
class _Clean:
    ranks: dict[int, int]  # response id -> dense rank
    choice: str  # the pairwise choice, "" in rank mode
    scores: dict[str, int]
    flags: dict[str, list[str]]
    comment: str
    time_spent_ms: int


def _clean(
    *, loaded: _Loaded, ranks: Any, choice: Any, scores: Any, flags: Any, comment: Any, time_spent_ms: Any
) -> _Clean:
    """The payload checked against the set as this labeler saw it; raises on the first problem."""
    project = loaded.project
    response_ids = [int(response_id) for response_id in loaded.assignment.display_order]
    pairwise_choice = ""
    if project.task_mode == TaskMode.PAIRWISE:
        if not isinstance(choice, str) or choice not in PairwiseChoice.values:
            raise _invalid("choice", f"must be one of {', '.join(PairwiseChoice.values)}, got {choice!r}.")
        if ranks is not None:
            raise _invalid("ranks", "pairwise projects take 'choice', not 'ranks'.")
        first, second = response_ids  # A and B as this labeler saw them
        pairwise_choice = choice
        ranks_by_id = {
            PairwiseChoice.A: {first: 1, second: 2},
            PairwiseChoice.B: {first: 2, second: 1},
        }.get(choice, {first: 1, second: 1})  # type: ignore[call-overload]
    else:
        if choice is not None:
            raise _invalid("choice", "only pairwise projects take a choice; send 'ranks'.")
        try:
            ranks_by_id = rules.ranks_validate(ranks, response_ids, project.k)
        except rules.RuleViolation as exc:
            raise _violation(exc) from None
    clean_scores = _validate_scores(scores, response_ids, required=project.require_likert)
    try:
        clean_flags = rules.ranking_flags_validate(flags, response_ids, project.flag_keys)
    except rules.RuleViolation as exc:
        raise _violation(exc) from None
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise _invalid("comment", f"must be text of at most {MAX_COMMENT} characters.")
    if text_unstorable(comment):
        raise _invalid("comment", "must not contain NUL characters or unpaired surrogates.")
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        raise _invalid("time_spent_ms", "must be a non-negative whole number.")
    return _Clean(
        ranks_by_id, pairwise_choice, clean_scores, clean_flags, comment.strip(), min(time_spent_ms, 2**31 - 1)
    )


def _clean_key(value: Any) -> str:
    """The idempotency key, trimmed; raises when it is missing or not a usable string."""
    if value is None:
        raise _invalid("idempotency_key", "This field is required.")
    key = value.strip() if isinstance(value, str) else ""
    if not key or len(key) > MAX_KEY:
        raise _invalid("idempotency_key", f"a non-empty string of at most {MAX_KEY} characters is required.")
    if text_unstorable(key):
        raise _invalid("idempotency_key", "must not contain NUL characters or unpaired surrogates.")
    return key


def _write(
    *, loaded: _Loaded, labeler: AuthUser, key: str, clean: _Clean, now: datetime, live_after: datetime, late: bool
) -> Ranking | None:
    """Insert the ranking and its comparisons, mark the assignment submitted and count it on its
    set. ``None`` when (PostgreSQL) the assignment was no longer a lease live past ``live_after``."""
    assignment, response_set = loaded.assignment, loaded.response_set
    ranking = Ranking(
        assignment_id=assignment.pk,
        response_set_id=response_set.pk,
        project_id=response_set.project_id,
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
        **_ranking_params(ranking),
        "assignment": assignment.pk,
        "set": response_set.pk,
        "project": response_set.project_id,
        "labeler": labeler.pk,
        "late": late,
        "now": db.db_datetime(now),
        "live_after": db.db_datetime(live_after),
        "both_bad": clean.choice == PairwiseChoice.BOTH_BAD,
    }
    pairs = rules.ranking_pairs(clean.ranks)
    sql = _sql(db.vendor())
    if "write" in sql:
        a, b, outcome, margin = (list(column) for column in zip(*pairs, strict=True))
        row = db.fetch_one(sql["write"], {**params, "a": a, "b": b, "outcome": outcome, "margin": margin})
        if row is None:
            return None
        ranking.id = row[0]
    else:
        row = db.fetch_one(sql["ranking"], params)
        if row is None:
            raise RuntimeError("INSERT ... RETURNING returned no row")
        ranking.id = row[0]
        db.execute(
            sql["comparisons"] + ", ".join([_COMPARISON_ROW] * len(pairs)),
            [
                value
                for pair in pairs
                for value in _comparison_values(
                    ranking_id=ranking.id,
                    set_id=response_set.pk,
                    labeler_id=labeler.pk,
                    pair=pair,
                    both_bad=params["both_bad"],
                    now=params["now"],
                )
            ],
        )
        db.execute(sql["submitted"], params)
        db.execute(sql["count"], params)
    if rules.set_fills(is_gold=response_set.is_gold):  # gold is scored on its own, not in agreement
        project_id = response_set.project_id
        transaction.on_commit(lambda: agreement_refresh_schedule(project_id=project_id))
    return db.saved(ranking)


def ranking_submit_input(body: Any) -> dict[str, Any]:
    """The submit body (parsed JSON) as ``ranking_submit``'s keyword arguments: the one place the API
    and the page read it, so the same mistake gets the same message from both. A JSON ``null``
    comment is no comment; a time sent as a float is cut to whole milliseconds."""
    if not isinstance(body, dict):
        raise ApplicationError(
            f"Send a JSON object with idempotency_key and ranks (or choice), not {type(body).__name__}.",
            code="invalid",
        )
    time_spent = body.get("time_spent_ms", 0)
    if isinstance(time_spent, float) and math.isfinite(time_spent) and time_spent >= 0:
        time_spent = int(time_spent)
    return {
        "idempotency_key": body.get("idempotency_key"),
        "ranks": body.get("ranks"),
        "choice": body.get("choice"),
        "scores": body.get("scores"),
        "flags": body.get("flags"),
        "comment": "" if body.get("comment") is None else body["comment"],
        "time_spent_ms": time_spent,
    }


def ranking_submit(
    *,
    assignment_id: int,
    labeler: AuthUser,
    idempotency_key: Any,
    ranks: Any = None,
    choice: Any = None,
    scores: Any = None,
    flags: Any = None,
    comment: Any = "",
    time_spent_ms: Any = 0,
) -> tuple[Ranking, bool]:
    """Submit a ranking and derive its C(K,2) comparisons. Returns ``(ranking, created)``; a repeat
    with the same idempotency key returns the first ranking unchanged."""
    key = _clean_key(idempotency_key)
    payload = {
        "ranks": ranks,
        "choice": choice,
        "scores": scores,
        "flags": flags,
        "comment": comment,
        "time_spent_ms": time_spent_ms,
    }
    try:
        if db.vendor() == "postgresql":
            # Inside a caller's transaction, a savepoint: a failed statement must leave it usable.
            nested = transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()
            with nested:
                ranking = _submit_unlocked(assignment_id=assignment_id, labeler=labeler, key=key, payload=payload)
            if ranking is not None:
                return ranking, True
        with transaction.atomic():
            return _submit_locked(assignment_id=assignment_id, labeler=labeler, key=key, payload=payload)
    except IntegrityError as exc:
        # The key was used for another ranking of mine in this project (a repeat of an earlier
        # submit, or a concurrent twin of this one that won the race).
        previous = _repeat_of(assignment_id=assignment_id, labeler=labeler, key=key)
        if previous is not None:
            if previous.assignment_id != assignment_id:
                raise Conflict(
                    "idempotency_key: already used for another assignment.", code="idempotency_key_reused"
                ) from None
            return previous, False
        if "responseset_overlap_not_exceeded" in str(exc):
            # The set's last slot went to someone else (their late submit got in first).
            raise Conflict(
                "This item already has all the rankings it needs; this ranking was not saved.", code="set_complete"
            ) from None
        raise


def _repeat_of(*, assignment_id: int, labeler: AuthUser, key: str) -> Ranking | None:
    """My ranking with ``key`` in the project of ``assignment_id``, in one statement: keys are
    scoped to the labeler and the project (the ``ranking_unique_idempotency_key`` constraint)."""
    if not db.fits_id(assignment_id):
        return None
    project = Assignment.objects.filter(pk=assignment_id).values("response_set__project_id")[:1]
    return Ranking.objects.filter(labeler=labeler, project_id=Subquery(project), idempotency_key=key).first()


def _submit_unlocked(*, assignment_id: int, labeler: AuthUser, key: str, payload: dict[str, Any]) -> Ranking | None:
    """The usual submit on PostgreSQL (see the module's docstring); ``None`` sends it down the
    locked path: not a lease of mine live for ``CLAIM_MARGIN`` more, gold, a labeler or project that
    may not work (the locked path says why), or claimed meanwhile."""
    loaded = _load(assignment_id=assignment_id, labeler=labeler, lock=False)
    now = timezone.now()
    live_after = now + CLAIM_MARGIN
    if (
        loaded is None
        or loaded.assignment.status != AssignmentStatus.LEASED
        or loaded.assignment.expires_at <= live_after
        or not rules.set_fills(is_gold=loaded.response_set.is_gold)
        or not loaded.may_work
    ):
        return None
    clean = _clean(loaded=loaded, **payload)
    return _write(loaded=loaded, labeler=labeler, key=key, clean=clean, now=now, live_after=live_after, late=False)


def _submit_locked(*, assignment_id: int, labeler: AuthUser, key: str, payload: dict[str, Any]) -> tuple[Ranking, bool]:
    previous = _repeat_of(assignment_id=assignment_id, labeler=labeler, key=key)
    if previous is not None:  # a repeat: the key decides before anything else, even a pause since
        if previous.assignment_id != assignment_id:
            raise Conflict("idempotency_key: already used for another assignment.", code="idempotency_key_reused")
        return previous, False
    loaded = _load(assignment_id=assignment_id, labeler=labeler, lock=True)
    if loaded is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    assignment, response_set = loaded.assignment, loaded.response_set
    if assignment.status == AssignmentStatus.SUBMITTED:
        ranking = Ranking.objects.get(assignment_id=assignment.pk)
        if ranking.idempotency_key == key:  # a twin of this request committed while it waited
            return ranking, False
        raise Conflict("This item was already submitted.", code="already_submitted")
    if assignment.status == AssignmentStatus.SKIPPED:
        raise Conflict("This item was skipped; it cannot be submitted.", code="already_skipped")
    loaded.check_may_work()

    # Validate the payload before the slot check so a bad payload always says what is wrong.
    clean = _clean(loaded=loaded, **payload)
    now = timezone.now()  # after the set's lock: no lease can count this one lapsed in between
    late = assignment.status == AssignmentStatus.EXPIRED or assignment.expires_at <= now
    if late and rules.set_fills(is_gold=response_set.is_gold):
        # My slot may have gone to someone else: recount (the set is locked).
        still_needed = response_set.status == ResponseSetStatus.OPEN and rules.slot_free(
            is_gold=response_set.is_gold,
            required=response_set.required_count,
            submitted=response_set.submitted_count,
            live_leases=response_set_live_leases(response_set, now, exclude_assignment=assignment.pk),
        )
        if not still_needed:
            raise Conflict(
                f"Your lease on this item expired at {assignment.expires_at:%H:%M:%S} UTC and the item already has "
                f"the {response_set.required_count} rankings it needs; this ranking was not saved.",
                code="lease_expired",
            )
    written = _write(loaded=loaded, labeler=labeler, key=key, clean=clean, now=now, live_after=now, late=late)
    if written is None:
        # The assignment and its set are locked, so only a pause or a deactivation committed since
        # the read makes the claim take nothing (PostgreSQL): refuse, as if it had come first.
        fresh = _load(assignment_id=assignment_id, labeler=labeler, lock=False)
        if fresh is not None:
            fresh.check_may_work()
        raise RuntimeError(f"assignment {assignment.pk} could not be claimed under its lock")
    if response_set.is_gold:
        gold_result_record(
            project=loaded.project, labeler=labeler, ranks=clean.ranks, gold_ranks=response_set.gold_ranks or {}
        )
    return written, True
