"""Ranking -> C(K,2) comparisons, validation, idempotency, pairwise mode."""

from __future__ import annotations

import pytest

from annotation.models import AssignmentStatus, Comparison, Ranking, ResponseSetStatus, TaskMode
from annotation.services import assignment_lease_next, ranking_submit
from config.exceptions import ApplicationError, Conflict
from tests.factories import ProjectFactory, response_set_create

pytestmark = pytest.mark.django_db


def _leased(project, labeler):
    response_set = response_set_create(project=project)
    assignment = assignment_lease_next(project=project, labeler=labeler)
    assert assignment is not None and assignment.response_set_id == response_set.pk
    return assignment


def test_k5_ranking_with_one_tie_gives_10_comparisons_with_right_margins(labeler):
    project = ProjectFactory(k=5, overlap=1)
    assignment = _leased(project, labeler)
    a, b, c, d, e = sorted(int(pk) for pk in assignment.display_order)
    # {A:1, C:2, D:3, E:3, B:4}
    ranks = {a: 1, c: 2, d: 3, e: 3, b: 4}
    ranking, created = ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key="k1", ranks=ranks)
    assert created
    rows = {(cmp.response_a_id, cmp.response_b_id): (cmp.outcome, cmp.margin) for cmp in ranking.comparisons.all()}
    assert len(rows) == 10
    assert rows == {
        (a, b): ("a", 3),
        (a, c): ("a", 1),
        (a, d): ("a", 2),
        (a, e): ("a", 2),
        (b, c): ("b", 2),
        (b, d): ("b", 1),
        (b, e): ("b", 1),
        (c, d): ("a", 1),
        (c, e): ("a", 1),
        (d, e): ("tie", 0),
    }
    assert sum(1 for outcome, _ in rows.values() if outcome == "tie") == 1
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.SUBMITTED
    assert ranking.ranks == {str(a): 1, str(b): 4, str(c): 2, str(d): 3, str(e): 3}
    assert ranking.response_set.status == ResponseSetStatus.COMPLETE  # overlap 1 reached


@pytest.mark.parametrize(
    ("choice", "outcome_for_first_shown", "margin", "both_bad"),
    [("a", "first", 1, False), ("b", "second", 1, False), ("tie", "tie", 0, False), ("both_bad", "tie", 0, True)],
)
def test_pairwise_choice_becomes_one_comparison(labeler, choice, outcome_for_first_shown, margin, both_bad):
    project = ProjectFactory(k=2, overlap=1, task_mode=TaskMode.PAIRWISE)
    assignment = _leased(project, labeler)
    shown_a, shown_b = (int(pk) for pk in assignment.display_order)
    ranking, _ = ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key="k", choice=choice)
    (comparison,) = ranking.comparisons.all()
    preferred = {"first": shown_a, "second": shown_b, "tie": None}[outcome_for_first_shown]
    assert comparison.preferred_id == preferred
    assert comparison.margin == margin
    assert comparison.both_bad is both_bad
    assert ranking.pairwise_choice == choice


def test_double_submit_with_same_key_gives_one_ranking(labeler, project):
    assignment = _leased(project, labeler)
    ranks = {pk: i + 1 for i, pk in enumerate(assignment.display_order)}
    first, created_first = ranking_submit(
        assignment_id=assignment.pk, labeler=labeler, idempotency_key="same", ranks=ranks
    )
    second, created_second = ranking_submit(
        assignment_id=assignment.pk, labeler=labeler, idempotency_key="same", ranks=ranks
    )
    assert (created_first, created_second) == (True, False)
    assert first.pk == second.pk
    assert Ranking.objects.count() == 1
    assert Comparison.objects.count() == 6
    assert first.response_set.submitted_count == 1


def test_resubmit_with_other_key_is_409(labeler, project):
    assignment = _leased(project, labeler)
    ranks = {pk: 1 for pk in assignment.display_order}
    ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key="one", ranks=ranks)
    with pytest.raises(Conflict) as exc:
        ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key="two", ranks=ranks)
    assert exc.value.code == "already_submitted"
    assert exc.value.message == "This item was already submitted."


@pytest.mark.parametrize(
    ("make_ranks", "message"),
    [
        (
            lambda ids: {ids[0]: 1, ids[1]: 2, ids[2]: 3},
            "ranks: response {3} has no rank; every response of the set needs one.",
        ),
        (
            lambda ids: {ids[0]: 1, ids[1]: 2, ids[2]: 3, ids[3]: 3, 999999: 4},
            "ranks: response 999999 is not in this response set.",
        ),
        (
            lambda ids: {ids[0]: 1, ids[1]: 3, ids[2]: 3, ids[3]: 4},
            "ranks: ranks must be dense (1, 2, 3, ... with ties sharing a rank and no gaps); got 1, 3, 4.",
        ),
        (
            lambda ids: {ids[0]: 0, ids[1]: 1, ids[2]: 2, ids[3]: 3},
            "ranks.{0}: must be a whole number from 1 to 4, got 0.",
        ),
        (
            lambda ids: {ids[0]: "1", ids[1]: 1, ids[2]: 2, ids[3]: 3},
            "ranks.{0}: must be a whole number from 1 to 4, got '1'.",
        ),
    ],
)
def test_bad_ranks_are_rejected_with_the_field(labeler, project, make_ranks, message):
    assignment = _leased(project, labeler)
    ids = [int(pk) for pk in assignment.display_order]
    with pytest.raises(ApplicationError) as exc:
        ranking_submit(assignment_id=assignment.pk, labeler=labeler, idempotency_key="x", ranks=make_ranks(ids))
    assert exc.value.message == message.format(*ids)
    assert exc.value.status == 400
    assert Ranking.objects.count() == 0 and Comparison.objects.count() == 0
    assignment.refresh_from_db()
    assert assignment.status == AssignmentStatus.LEASED


def test_scores_and_flags_are_validated_and_stored(labeler, project):
    assignment = _leased(project, labeler)
    ids = [int(pk) for pk in assignment.display_order]
    ranks = {pk: 1 for pk in ids}
    with pytest.raises(ApplicationError) as exc:
        ranking_submit(
            assignment_id=assignment.pk, labeler=labeler, idempotency_key="x", ranks=ranks, scores={ids[0]: 8}
        )
    assert exc.value.message == f"scores.{ids[0]}: must be a whole number from 1 to 7, got 8."
    with pytest.raises(ApplicationError) as exc:
        ranking_submit(
            assignment_id=assignment.pk, labeler=labeler, idempotency_key="x", ranks=ranks, flags={ids[1]: ["rude"]}
        )
    assert exc.value.message.startswith(f"flags.{ids[1]}: 'rude' is not a flag of this project (fails_instruction, ")
    ranking, _ = ranking_submit(
        assignment_id=assignment.pk,
        labeler=labeler,
        idempotency_key="x",
        ranks=ranks,
        scores={ids[0]: 7, str(ids[1]): 2},
        flags={ids[1]: ["hallucination", "harmful", "hallucination"]},
        comment="  fine  ",
        time_spent_ms=4200,
    )
    assert ranking.scores == {str(ids[0]): 7, str(ids[1]): 2}
    assert ranking.flags == {str(ids[1]): ["hallucination", "harmful"]}
    assert ranking.comment == "fine"
    assert ranking.time_spent_ms == 4200
    assert ranking.display_order == assignment.display_order


def test_ranking_records_the_guideline_version_it_was_leased_under(labeler, admin_user, project):
    from annotation.services import guideline_acknowledge, guideline_publish

    v1 = guideline_publish(project=project, body="Prefer honest answers.", published_by=admin_user)
    guideline_acknowledge(guideline=v1, user=labeler)
    project.refresh_from_db()
    assignment = _leased(project, labeler)
    guideline_publish(project=project, body="Prefer short honest answers.", published_by=admin_user)
    ranking, _ = ranking_submit(
        assignment_id=assignment.pk,
        labeler=labeler,
        idempotency_key="g",
        ranks={pk: 1 for pk in assignment.display_order},
    )
    assert ranking.guideline.version == 1
    project.refresh_from_db()
    with pytest.raises(Conflict) as exc:
        assignment_lease_next(project=project, labeler=labeler)
    assert exc.value.code == "guideline_not_acknowledged"
    assert exc.value.message == "Read and acknowledge guideline version 2 before the next item."
