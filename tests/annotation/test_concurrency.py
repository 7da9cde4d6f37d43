"""Real concurrent connections on PostgreSQL: overlap is never exceeded, double submits collapse."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from annotation.models import Assignment, Ranking, ResponseSet
from annotation.services import assignment_lease_next, ranking_submit
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = [pytest.mark.django_db(transaction=True), postgres_only()]


def _run_threads(target, args_list):
    barrier = threading.Barrier(len(args_list))
    results: list = [None] * len(args_list)
    errors: list = []

    def run(index, args):
        try:
            barrier.wait()
            results[index] = target(*args)
        except Exception as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def _submit(assignment, labeler, key):
    ranks = {pk: i + 1 for i, pk in enumerate(assignment.display_order)}
    return ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key=key, ranks=ranks)


def test_backend_is_postgres():
    assert connection.vendor == "postgresql"


def test_two_labelers_racing_for_the_last_slot(db):
    project = ProjectFactory(k=2, overlap=2)
    response_set = response_set_create(project=project)
    first = UserFactory(role="labeler")
    _submit(assignment_lease_next(project=project, labeler=first), first, "first")
    racers = [UserFactory(role="labeler") for _ in range(2)]
    for _ in range(5):  # repeat the race: a lost race must be lost every time
        Assignment.objects.filter(labeler__in=racers).delete()
        leases = _run_threads(lambda user: assignment_lease_next(project=project, labeler=user), [(u,) for u in racers])
        assert sum(lease is not None for lease in leases) == 1
    winner_index = next(i for i, lease in enumerate(leases) if lease is not None)
    _submit(leases[winner_index], racers[winner_index], "winner")
    response_set.refresh_from_db()
    assert (response_set.submitted_count, response_set.status) == (2, "complete")


def test_many_labelers_drain_the_queue_without_exceeding_overlap(db):
    project = ProjectFactory(k=3, overlap=3)
    sets = [response_set_create(project=project) for _ in range(12)]
    labelers = [UserFactory(role="labeler") for _ in range(6)]

    def work(user):
        done = 0
        while (lease := assignment_lease_next(project=project, labeler=user)) is not None:
            _submit(lease, user, f"{user.pk}-{lease.pk}")
            done += 1
        return done

    done = _run_threads(work, [(u,) for u in labelers])
    assert sum(done) == 12 * 3
    per_set = Counter(Ranking.objects.values_list("response_set_id", flat=True))
    assert per_set == {s.pk: 3 for s in sets}
    assert all(rs.submitted_count == 3 and rs.status == "complete" for rs in ResponseSet.objects.all())
    pairs = Counter(Ranking.objects.values_list("response_set_id", "labeler_id"))
    assert max(pairs.values()) == 1


def test_concurrent_double_submit_with_one_key_writes_one_ranking(db):
    project = ProjectFactory(k=4, overlap=1)
    response_set_create(project=project)
    user = UserFactory(role="labeler")
    lease = assignment_lease_next(project=project, labeler=user)
    results = _run_threads(lambda: _submit(lease, user, "double-click"), [(), (), ()])
    assert sorted(created for _, created in results) == [False, False, True]
    assert len({ranking.pk for ranking, _ in results}) == 1
    assert Ranking.objects.count() == 1
    assert ResponseSet.objects.get().submitted_count == 1
