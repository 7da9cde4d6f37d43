"""Gold items, qualification, consensus, review, automatic pauses, bias checks, the consensus export."""

from __future__ import annotations

import json

import pytest

from annotation.export import preference_rows, preferences_export_jsonl
from annotation.models import Assignment, ReviewState
from annotation.services import assignment_lease_next, ranking_submit
from audit.models import AuditAction, AuditEntry
from config.exceptions import ApplicationError, Conflict
from quality.models import LabelerQuality, QualificationState, ResponseSetConsensus
from quality.services import (
    agreement_report_refresh,
    labeler_quality_override,
    response_set_make_gold,
    review_accept,
    review_request_more_labels,
)
from tests.factories import ProjectFactory, UserFactory, response_set_create

pytestmark = pytest.mark.django_db


def _texts(assignment):
    return dict(assignment.response_set.responses.values_list("id", "text"))


def _rank(project, user, order, *, time_ms=20000):
    """Lease the next item and rank it by ``order`` (a list of texts, best first; tuples tie)."""
    lease = assignment_lease_next(project=project, labeler=user)
    by_text = {text: pk for pk, text in _texts(lease).items()}
    ranks = {}
    for rank, entry in enumerate(order, start=1):
        for text in entry if isinstance(entry, tuple) else (entry,):
            ranks[by_text[text]] = rank
    ranking, _ = ranking_submit(
        assignment_id=lease.pk,
        labeler=user,
        idempotency_key=f"{user.pk}-{lease.pk}",
        ranks=ranks,
        time_spent_ms=time_ms,
    )
    return lease, ranking


def _gold(project, texts, order):
    response_set = response_set_create(project=project, texts=texts)
    by_text = {text: pk for pk, text in _texts_of(response_set).items()}
    return response_set_make_gold(
        response_set=response_set, ranks={str(by_text[t]): i for i, t in enumerate(order, start=1)}, actor=None
    )


def _texts_of(response_set):
    return dict(response_set.responses.values_list("id", "text"))


def test_qualification_gives_gold_first_then_real_work_or_stops():
    project = ProjectFactory(k=3, overlap=2, qualification_items=2, qualification_threshold=0.7)
    real = response_set_create(project=project, texts=["r1", "r2", "r3"])
    _gold(project, ["a", "b", "c"], ["a", "b", "c"])
    _gold(project, ["d", "e", "f"], ["d", "e", "f"])
    good, bad = UserFactory(role="labeler"), UserFactory(role="labeler")

    for user, orders in ((good, (["a", "b", "c"], ["d", "e", "f"])), (bad, (["c", "b", "a"], ["f", "e", "d"]))):
        for _ in range(2):
            lease = assignment_lease_next(project=project, labeler=user)
            assert lease.response_set.is_gold  # qualification items come first
            texts = set(_texts(lease).values())
            order = next(o for o in orders if set(o) == texts)
            by_text = {text: pk for pk, text in _texts(lease).items()}
            ranking_submit(
                assignment_id=lease.pk,
                labeler=user,
                idempotency_key=f"q{lease.pk}",
                ranks={by_text[t]: i for i, t in enumerate(order, start=1)},
            )
    good_quality = LabelerQuality.objects.get(project=project, labeler=good)
    assert (good_quality.qualification, good_quality.gold_items, good_quality.gold_accuracy) == ("qualified", 2, 1.0)
    assert assignment_lease_next(project=project, labeler=good).response_set_id == real.pk
    bad_quality = LabelerQuality.objects.get(project=project, labeler=bad)
    assert (bad_quality.qualification, bad_quality.gold_accuracy) == (QualificationState.FAILED, 0.0)
    with pytest.raises(ApplicationError) as exc:
        assignment_lease_next(project=project, labeler=bad)
    assert (exc.value.status, exc.value.code) == (403, "not_qualified")
    assert exc.value.message == (
        f"You did not qualify for '{project.name}' (gold accuracy 0%, 70% needed). An admin can let you in."
    )
    labeler_quality_override(project=project, labeler=bad, override=True, actor=None)
    assert assignment_lease_next(project=project, labeler=bad).response_set_id == real.pk
    real.refresh_from_db()
    assert real.submitted_count == 0  # gold work never fills a real set


def test_gold_sets_mix_in_at_the_gold_rate_and_never_fill_up():
    project = ProjectFactory(k=2, overlap=1, gold_rate=1.0)
    gold = _gold(project, ["g1", "g2"], ["g1", "g2"])
    response_set_create(project=project, texts=["x", "y"])
    users = [UserFactory(role="labeler") for _ in range(3)]
    for user in users:
        lease, _ = _rank(project, user, ["g1", "g2"])
        assert lease.response_set_id == gold.pk  # everyone gets the gold set, beyond its overlap of 1
    assert Assignment.objects.filter(response_set=gold, status="submitted").count() == 3
    assert LabelerQuality.objects.get(project=project, labeler=users[0]).gold_accuracy == 1.0


def test_make_gold_needs_a_valid_reference_or_a_confident_consensus():
    project = ProjectFactory(k=2, overlap=1)
    response_set = response_set_create(project=project, texts=["p", "q"])
    with pytest.raises(Conflict) as exc:
        response_set_make_gold(response_set=response_set, actor=None)
    assert exc.value.message == "ranks: this set has no consensus yet; give a reference ranking."
    with pytest.raises(ApplicationError) as exc:
        response_set_make_gold(response_set=response_set, ranks={"999999": 1}, actor=None)
    assert exc.value.message == "ranks: response 999999 is not in this response set."
    assert not AuditEntry.objects.exists()  # a refused decision leaves no row


def test_making_a_set_gold_writes_one_audit_row():
    project = ProjectFactory(k=2, overlap=1)
    response_set = response_set_create(project=project, texts=["p", "q"])
    by_text = {text: pk for pk, text in _texts_of(response_set).items()}
    admin = UserFactory(role="admin", username="goldsmith")
    reference = {str(by_text["p"]): 1, str(by_text["q"]): 2}
    response_set_make_gold(response_set=response_set, ranks=reference, actor=admin)
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.project, entry.target, entry.reason) == (
        admin,
        AuditAction.GOLD_SET,
        project,
        f"annotation.responseset:{response_set.pk}",
        "Gold with a reference ranking as the reference.",
    )
    assert (entry.before, entry.after) == (
        {"is_gold": False, "gold_ranks": None},
        {"is_gold": True, "gold_ranks": reference},
    )


def test_consensus_review_and_consensus_export():
    project = ProjectFactory(k=3, overlap=3)
    response_set_create(project=project, texts=["best", "mid", "worst"])
    users = [UserFactory(role="labeler", username=f"u{i}") for i in range(3)]
    _rank(project, users[0], ["best", "mid", "worst"])
    _rank(project, users[1], ["best", "mid", "worst"])
    _, dissent = _rank(project, users[2], ["worst", "mid", "best"])
    agreement_report_refresh(project=project, force=True)
    consensus = ResponseSetConsensus.objects.get()
    by_id = _texts_of(consensus.response_set)
    assert {by_id[int(pk)]: rank for pk, rank in consensus.ranks.items()} == {"best": 1, "mid": 2, "worst": 3}
    assert consensus.source == "model"
    # 9 labels; the dissenter's 3 disagree with the consensus: confidence 6/9.
    assert consensus.confidence == pytest.approx(6 / 9, abs=1e-6)
    rows = list(preference_rows(project=project, mode="consensus"))
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    assert list(preferences_export_jsonl(project=project, mode="consensus")) == [compact(r) + "\n" for r in rows]
    assert sorted((r["chosen"], r["rejected"], r["agreement"]) for r in rows) == [
        ("best", "mid", 2),
        ("best", "worst", 2),
        ("mid", "worst", 2),
    ]
    assert rows[0]["consensus_confidence"] == pytest.approx(6 / 9, abs=1e-6)
    assert len(rows[0]["annotator_skills"]) == 3 and all(s is not None for s in rows[0]["annotator_skills"])

    response_set = consensus.response_set
    before = {"source": consensus.source, "ranks": consensus.ranks, "accepted_ranking_id": None}
    admin = UserFactory(role="admin", username="reviewer")
    review_accept(response_set=response_set, ranking=dissent, actor=admin)
    entry = AuditEntry.objects.get(action=AuditAction.REVIEW_ACCEPT)
    assert (entry.actor, entry.project, entry.target, entry.reason) == (
        admin,
        project,
        f"annotation.responseset:{response_set.pk}",
        f"Ranking {dissent.pk} by {dissent.labeler.get_username()} taken as the consensus.",
    )
    assert (entry.before, entry.after) == (
        before,
        {"source": "review", "ranks": dissent.ranks, "accepted_ranking_id": dissent.pk},
    )
    response_set.refresh_from_db()
    assert response_set.review_state == ReviewState.ACCEPTED
    agreement_report_refresh(project=project, force=True)  # a review outranks the model
    consensus = ResponseSetConsensus.objects.get()
    assert (consensus.source, consensus.accepted_ranking_id, consensus.ranks) == ("review", dissent.pk, dissent.ranks)
    more = review_request_more_labels(response_set=response_set)
    assert (more.required_count, more.status, more.review_state) == (4, "open", "more_labels")


def test_low_agreement_sets_go_to_review_and_bias_figures_are_stored():
    project = ProjectFactory(k=2, overlap=2, review_kendall_w=0.3)
    response_set = response_set_create(project=project, texts=["x", "y"])
    a, b = UserFactory(role="labeler"), UserFactory(role="labeler")
    _rank(project, a, ["x", "y"], time_ms=20000)
    _rank(project, b, ["y", "x"], time_ms=500)
    agreement_report_refresh(project=project, force=True)
    response_set.refresh_from_db()
    assert response_set.review_state == ReviewState.NEEDS_REVIEW  # W = 0 for opposite rankings
    quality_b = LabelerQuality.objects.get(project=project, labeler=b)
    assert quality_b.fast_items == 1  # 500 ms is under a quarter of the median
    assert quality_b.median_time_ms == 500
    assert quality_b.position_bias in (0.0, 1.0)  # one decided pair: shown first won or lost
    assert quality_b.comparisons == 1 and quality_b.agreement_with_consensus is not None


def test_unreliable_labelers_are_paused_with_the_reason_and_an_admin_can_override():
    project = ProjectFactory(k=2, overlap=3, reliability_threshold=0.6, reliability_min_labels=5)
    texts = [(f"good{i}", f"bad{i}") for i in range(8)]
    for good, bad in texts:
        response_set_create(project=project, texts=[good, bad])
    honest = [UserFactory(role="labeler", username=f"h{i}") for i in range(2)]
    contrarian = UserFactory(role="labeler", username="contrarian")
    for user in [*honest, contrarian]:
        for _ in texts:
            lease = assignment_lease_next(project=project, labeler=user)
            by_text = {text: pk for pk, text in _texts(lease).items()}
            good = next(t for t in by_text if t.startswith("good"))
            bad = next(t for t in by_text if t.startswith("bad"))
            ranks = {by_text[good]: 2, by_text[bad]: 1} if user == contrarian else {by_text[good]: 1, by_text[bad]: 2}
            ranking_submit(assignment_id=lease.pk, labeler=user, idempotency_key=f"r{lease.pk}", ranks=ranks)
    agreement_report_refresh(project=project, force=True)
    contrarian.refresh_from_db()
    quality = LabelerQuality.objects.get(project=project, labeler=contrarian)
    assert quality.reliability < 0.6
    assert contrarian.profile.status == "paused"
    assert contrarian.profile.status_reason.startswith(
        f"Automatic: reliability {quality.reliability:.2f} on '{project.name}'"
    )
    assert all(u.profile.status == "active" for u in honest)
    paused = AuditEntry.objects.get(action=AuditAction.LABELER_PAUSE)  # the loop decided: no actor
    assert (paused.actor, paused.actor_name, paused.project, paused.target, paused.reason) == (
        None,
        "",
        project,
        f"auth.user:{contrarian.pk}",
        contrarian.profile.status_reason,
    )
    assert (paused.before, paused.after) == (
        {"status": "active", "reason": ""},
        {"status": "paused", "reason": contrarian.profile.status_reason},
    )
    admin = UserFactory(role="admin", username="boss")
    labeler_quality_override(project=project, labeler=contrarian, override=True, actor=admin)
    contrarian.refresh_from_db()
    assert contrarian.profile.status == "active"
    override = AuditEntry.objects.get(action=AuditAction.QUALITY_OVERRIDE)
    assert (override.actor, override.actor_name, override.project, override.target) == (
        admin,
        "boss",
        project,
        f"auth.user:{contrarian.pk}",
    )
    assert (override.before, override.after) == ({"override": False}, {"override": True})
    resumed = AuditEntry.objects.get(action=AuditAction.LABELER_RESUME)
    assert (resumed.actor, resumed.project, resumed.after) == (admin, project, {"status": "active", "reason": ""})
    agreement_report_refresh(project=project, force=True)
    contrarian.refresh_from_db()
    assert contrarian.profile.status == "active"  # the override holds
