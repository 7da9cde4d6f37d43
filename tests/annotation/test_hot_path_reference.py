"""The PostgreSQL submit statement writes exactly what the ORM writes for the same ranking.

The statement's INSERT column lists come from the models and its constants from ``annotation.rules``;
this checks the result row by row against a reference written with the ORM and a plain loop."""

from __future__ import annotations

from itertools import combinations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.models import Assignment, AssignmentStatus, Comparison, Ranking, ResponseSet
from annotation.services import assignment_lease_next, guideline_acknowledge, guideline_publish, ranking_submit
from labelers.models import Role
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = [pytest.mark.django_db, postgres_only()]
SKIP = {"id", "ranking_id", "created_at"}


class _Undo(Exception):
    pass


def _rows(assignment_id: int) -> dict:
    ranking = Ranking.objects.get(assignment_id=assignment_id)
    fields = [f.attname for f in Ranking._meta.concrete_fields if f.attname not in SKIP]
    comparison_fields = [f.attname for f in Comparison._meta.concrete_fields if f.attname not in SKIP]
    assignment = Assignment.objects.get(pk=assignment_id)
    response_set = ResponseSet.objects.get(pk=assignment.response_set_id)
    return {
        "ranking": {name: getattr(ranking, name) for name in fields},
        "comparisons": list(
            Comparison.objects.filter(ranking=ranking)
            .order_by("response_a_id", "response_b_id")
            .values_list(*comparison_fields)
        ),
        "assignment": assignment.status,
        "set": (response_set.submitted_count, response_set.status),
    }


def _written(write) -> dict:
    """What ``write`` leaves in the database, undone afterwards."""
    out = {}
    try:
        with transaction.atomic():
            out = write()
            raise _Undo
    except _Undo:
        pass
    return out


def test_the_statement_path_and_the_orm_write_the_same_rows():
    admin, labeler = UserFactory(role=Role.ADMIN), UserFactory(role=Role.LABELER)
    project = ProjectFactory(k=4, overlap=1)
    guideline_acknowledge(guideline=guideline_publish(project=project, body="Rank.", published_by=admin), user=labeler)
    response_set_create(project=project)
    lease = assignment_lease_next(project=project, labeler=labeler)
    order = [int(pk) for pk in lease.display_order]
    ranks = {str(order[0]): 2, str(order[1]): 1, str(order[2]): 3, str(order[3]): 2}  # a tie and a margin of 2
    payload = {
        "scores": {str(order[0]): 5},
        "flags": {str(order[2]): ["hallucination"]},
        "comment": " ok ",
        "time_spent_ms": 1234,
    }

    def through_the_statement():
        with CaptureQueriesContext(connection) as queries:
            ranking_submit(assignment_id=lease.pk, labeler=labeler, idempotency_key="k-1", ranks=ranks, **payload)
        assert any("WITH claimed AS" in q["sql"] for q in queries.captured_queries)  # the one-statement path
        return _rows(lease.pk)

    def through_the_orm():
        now = timezone.now()
        ranking = Ranking.objects.create(
            assignment=lease,
            response_set_id=lease.response_set_id,
            project=project,
            labeler=labeler,
            guideline_id=lease.guideline_id,
            ranks={str(pk): ranks[str(pk)] for pk in sorted(order)},
            display_order=lease.display_order,
            pairwise_choice="",
            scores=payload["scores"],
            flags=payload["flags"],
            comment="ok",
            time_spent_ms=1234,
            idempotency_key="k-1",
            submitted_late=False,
        )
        comparisons = []
        for a, b in combinations(sorted(order), 2):  # a plain loop, not the rules module
            rank_a, rank_b = ranks[str(a)], ranks[str(b)]
            outcome = "a" if rank_a < rank_b else "b" if rank_b < rank_a else "tie"
            comparisons.append(
                Comparison(
                    ranking=ranking,
                    response_set_id=lease.response_set_id,
                    labeler=labeler,
                    response_a_id=a,
                    response_b_id=b,
                    outcome=outcome,
                    margin=abs(rank_a - rank_b),
                    both_bad=False,
                )
            )
        Comparison.objects.bulk_create(comparisons)
        Assignment.objects.filter(pk=lease.pk).update(status=AssignmentStatus.SUBMITTED, finished_at=now)
        ResponseSet.objects.filter(pk=lease.response_set_id).update(
            submitted_count=1, status="complete", completed_at=now
        )
        return _rows(lease.pk)

    statement, reference = _written(through_the_statement), _written(through_the_orm)
    assert len(reference["comparisons"]) == 6
    assert statement == reference
