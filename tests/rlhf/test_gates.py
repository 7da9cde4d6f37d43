"""The gates: each decides and explains in one record; the loop writes its verdict on the audit trail
and promotes what passed with the gate's reason; older stored shapes still read."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from rlhf.models import ModelKind, ModelState, ModelVersion, RunKind, RunStatus, TrainingRun
from rlhf.records import HumanEvalGate, PPOGate, RewardGate, RunSummary
from rlhf.services import loop, runs
from rlhf.services.registry import model_version_register
from tests.factories import ProjectFactory


def test_the_ppo_gate_without_required_improvement_passes_on_kl_alone():
    gate = PPOGate.decide(
        candidate_reward=0.1, baseline_reward=0.12, kl=0.8, max_kl=10.0, require_improvement=False, prompts=3
    )
    assert gate.passed is True
    assert [(c.name, c.passed) for c in gate.checks] == [("improvement", None), ("max_kl", True)]
    assert gate.reason == "Passed: KL to the reference 0.800 ≤ the limit 10.000."
    strict = PPOGate.decide(
        candidate_reward=0.1, baseline_reward=0.12, kl=0.8, max_kl=10.0, require_improvement=True, prompts=3
    )
    assert strict.passed is False
    assert strict.reason == (
        "Did not pass: Held-out reward 0.100 against 0.120 for the policy it started from (not better; 3 prompts). "
        "KL to the reference 0.800 ≤ the limit 10.000."
    )
    assert PPOGate.from_json(strict.to_json()) == strict


def _correct(right: int, n: int, *, first: bool = True) -> list[bool]:
    """``right`` pairs of ``n`` ranked as the labeler did: the first ones, or the last ones."""
    return [i < right for i in range(n)] if first else [i >= n - right for i in range(n)]


def test_the_reward_gate_refuses_only_a_model_the_promoted_one_beats_by_the_margin_and_significantly():
    # 40 pairs: the promoted model gets 32 right, the new one 24, all of them among the promoted one's:
    # 8 discordant pairs all for the promoted one, p = 1/2**8.
    worse = RewardGate.decide(
        new_accuracy=None,
        min_accuracy=0.55,
        margin=0.02,
        new_correct=_correct(24, 40),
        promoted_correct=_correct(32, 40),
        promoted_version=7,
        promoted_name="reward-run-3",
    )
    assert (worse.passed, worse.new_only, worse.old_only, worse.p_value) == (False, 0, 8, 1 / 256)
    assert worse.reason == (
        "Did not pass: Held-out accuracy 60.0% ≥ the minimum 55.0%. The promoted reward model ('reward-run-3') "
        "scores 80.0% on the same 40 pairs (0 right only for the new one, 8 only for the promoted one; one-sided "
        "McNemar p = 0.004): it leads by more than the margin 2.0% and significantly, so the new one is refused."
    )
    # 20 pairs: the promoted one 15 right, the new one 14; they differ on 3 pairs (1 for the new one,
    # 2 for the promoted one): p = P(X >= 2 | Bin(3, 1/2)) = 4/8, not significant: the new one replaces it.
    near = RewardGate.decide(
        new_accuracy=None,
        min_accuracy=0.55,
        margin=0.02,
        new_correct=[True] * 13 + [False, False] + [True] + [False] * 4,
        promoted_correct=[True] * 15 + [False] * 5,
    )
    assert (near.new_accuracy, near.promoted_accuracy, near.new_only, near.old_only) == (0.7, 0.75, 1, 2)
    assert (near.passed, near.p_value) == (True, 0.5)
    assert near.checks[1].text == (
        "The promoted reward model (version ?) scores 75.0% on the same 20 pairs (1 right only for the new one, "
        "2 only for the promoted one; one-sided McNemar p = 0.500): not better by more than the margin 2.0% with "
        "p < 0.05."
    )
    # 20 pairs, the promoted one right on 15, the new one on the first 11 of those and nothing else: 4
    # discordant pairs, all for the promoted one. p = 1/16 can never be < 0.05 with 4 pairs, but a lead of
    # 20 points with no pair for the new one is refused; with one pair for the new one (4 to 1, p = 0.19) it is not.
    few = RewardGate.decide(
        new_accuracy=None,
        min_accuracy=0.5,
        margin=0.02,
        new_correct=_correct(11, 20),
        promoted_correct=_correct(15, 20),
    )
    assert (few.passed, few.new_only, few.old_only, few.p_value) == (False, 0, 4, 1 / 16)
    assert few.checks[1].text == (
        "The promoted reward model (version ?) scores 75.0% on the same 20 pairs (0 right only for the new one, "
        "4 only for the promoted one; one-sided McNemar p = 0.062): it leads by more than the margin 2.0% and is "
        "right on every pair where they differ, too few for the test to reach p < 0.05, so the new one is refused."
    )
    four_to_one = RewardGate.decide(
        new_accuracy=None,
        min_accuracy=0.5,
        margin=0.02,
        new_correct=[*_correct(11, 20)[:19], True],
        promoted_correct=_correct(15, 20),
    )
    assert (four_to_one.passed, four_to_one.new_only, four_to_one.old_only) == (True, 1, 4)
    # The same difference, significant, but inside a margin of 25 points: passes.
    wide = RewardGate.decide(
        new_accuracy=0.6,
        min_accuracy=0.55,
        margin=0.25,
        new_correct=_correct(24, 40),
        promoted_correct=_correct(32, 40),
    )
    assert wide.passed is True
    assert RewardGate.decide(new_accuracy=0.56, min_accuracy=0.55, margin=0.02).passed is True
    assert RewardGate.decide(new_accuracy=None, min_accuracy=0.55, margin=0.02).passed is False  # no figure scores 0
    assert RewardGate.from_json(worse.to_json()) == worse
    # A verdict stored before the paired test (no margin) still reads as the strict comparison it was.
    old = RewardGate.from_json(
        {"new_accuracy": 0.6, "min_accuracy": 0.55, "promoted_accuracy": 0.64, "promoted_version": 7, "passed": False}
    )
    assert old.reason == (
        "Did not pass: Held-out accuracy 60.0% ≥ the minimum 55.0%. "
        "The promoted reward model (version 7) scores 64.0% on the same pairs: not beaten."
    )


def test_old_stored_shapes_read_with_the_setting_they_were_decided_with():
    """Before version 1 a PPO verdict did not store ppo_require_improvement: a pass no better than the
    start was decided with it off."""
    old = {"prompts": 3, "candidate_reward": 0.1, "baseline_reward": 0.12, "kl": 0.8, "max_kl": 10.0, "passed": True}
    summary = RunSummary.from_json("ppo", {"metrics": {"ppo/kl": 0.8}, "evaluation": old})
    assert summary.version == 0 and isinstance(summary.gate, PPOGate)
    assert (summary.gate.require_improvement, summary.gate.passed) == (False, True)
    failed = RunSummary.from_json("ppo", {"evaluation": {**old, "passed": False}}).gate
    assert failed is not None and failed.require_improvement is True
    reward = RunSummary.from_json(
        "reward",
        {
            "metrics": {"reward/human_agreement": 0.7},
            "evaluation": {"new_accuracy": 0.6, "min_accuracy": 0.5, "passed": True},
        },
    ).gate
    assert isinstance(reward, RewardGate)
    assert [c.text for c in reward.checks] == [
        "Held-out accuracy 60.0% ≥ the minimum 50.0%.",
        "No promoted reward model to beat.",
        "Human agreement on the held-out pairs: 70.0% (the ceiling).",
    ]


def _finished_reward_run(project, reference, gate: RewardGate, *, status: str = RunStatus.SUCCEEDED) -> TrainingRun:
    """A reward run whose executor is done; ``status`` running: its attempt (1) has yet to end it."""
    run = TrainingRun.objects.create(
        project=project,
        kind=RunKind.REWARD,
        status=status,
        attempts=1,
        reference=reference,
        summary={"version": 1, "metrics": {}, "evaluation": gate.to_json()},
    )
    run.output_version = ModelVersion.objects.create(
        project=project, kind=ModelKind.REWARD, name=f"reward-run-{run.pk}", path="/models/x", run=run
    )
    run.save()
    return run


@pytest.mark.django_db
def test_the_loop_records_each_verdict_and_promotes_what_passed_with_its_reason(tiny_models, monkeypatch):
    monkeypatch.setattr(runs, "_broker_problem", lambda: None)
    monkeypatch.setattr(runs, "_enqueue", lambda run_id: True)
    project = ProjectFactory()
    sft = model_version_register(
        project=project,
        kind=ModelKind.POLICY,
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    AuditEntry.objects.all().delete()
    failing = _finished_reward_run(
        project, sft, RewardGate.decide(new_accuracy=0.5, min_accuracy=0.55, margin=0.02), status="running"
    )
    loop._succeed(failing)
    passing = _finished_reward_run(
        project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55, margin=0.02), status="running"
    )
    loop._succeed(passing)
    out = passing.output_version
    assert [
        (e.actor_id, e.action, e.target, e.reason, e.before, e.after) for e in AuditEntry.objects.order_by("id")
    ] == [
        (
            None,
            "gate.verdict",
            f"rlhf.modelversion:{failing.output_version_id}",
            "Did not pass: Held-out accuracy 50.0% < the minimum 55.0%. No promoted reward model to beat.",
            {},
            {"gate": "reward", "passed": False, "run": failing.pk},
        ),
        (
            None,
            "gate.verdict",
            f"rlhf.modelversion:{out.pk}",
            "Passed: Held-out accuracy 70.0% ≥ the minimum 55.0%. No promoted reward model to beat.",
            {},
            {"gate": "reward", "passed": True, "run": passing.pk},
        ),
        (
            None,
            "model.promote",
            f"rlhf.modelversion:{out.pk}",
            "Passed: Held-out accuracy 70.0% ≥ the minimum 55.0%. No promoted reward model to beat.",
            {},
            {"version": out.pk, "name": out.name},
        ),
    ]
    out.refresh_from_db()
    failing.output_version.refresh_from_db()
    assert (out.state, failing.output_version.state) == (ModelState.PROMOTED, ModelState.CANDIDATE)
    started = TrainingRun.objects.get(project=project, kind=RunKind.PPO)  # the chain goes on with the new RM
    assert (started.trigger, started.reward_model_id) == ("chain", out.pk)
    assert TrainingRun.objects.get(pk=passing.pk).status == RunStatus.SUCCEEDED


@pytest.mark.django_db
def test_a_crash_while_writing_the_verdict_fails_the_run_with_its_cause_not_succeeded(tiny_models, monkeypatch):
    """The verdict, the promotion and the run's end are one transaction: a run is never succeeded
    without the decision on its model; a failure there ends the run failed with its cause, instead
    of leaving it running for the reaper to train again."""
    project = ProjectFactory()
    sft = model_version_register(
        project=project,
        kind=ModelKind.POLICY,
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    AuditEntry.objects.all().delete()
    run = _finished_reward_run(
        project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55, margin=0.02), status="running"
    )

    def crash(**kwargs):
        raise OSError("the database went away")

    monkeypatch.setattr(loop, "audit_record", crash)
    loop._succeed(run)
    run.refresh_from_db()
    assert (run.status, AuditEntry.objects.count()) == (RunStatus.FAILED, 0)
    assert "failed recording the run's end and gate verdict: the database went away" in run.log_tail
    assert "OSError: the database went away" in run.error
    assert "succeeded" not in run.log_tail
    assert ModelVersion.objects.get(pk=run.output_version_id).state == ModelState.CANDIDATE


@pytest.mark.django_db
def test_the_api_returns_the_gate_record_and_promotes_as_the_person(client_for, ml_engineer, tiny_models):
    project = ProjectFactory()
    sft = model_version_register(
        project=project,
        kind=ModelKind.POLICY,
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    run = _finished_reward_run(project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55, margin=0.02))
    client = client_for(ml_engineer)
    body = client.get(f"/api/v1/runs/{run.pk}/").json()
    assert body["gate"] == RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55, margin=0.02).to_json()
    response = client.post(f"/api/v1/model-versions/{run.output_version_id}/promote/")
    assert response.status_code == 200
    assert response.json()["gate"] is None  # this version was made without metrics
    entry = AuditEntry.objects.get(action="model.promote", target=f"rlhf.modelversion:{run.output_version_id}")
    assert (entry.actor_id, entry.actor_name, entry.reason) == (ml_engineer.pk, "emil", "")


def _human(
    votes: int,
    points: float,
    *,
    timed_out: bool = False,
    prompts: int | None = None,
    prompt_points: float | None = None,
) -> HumanEvalGate:
    """One vote per prompt unless ``prompts`` says otherwise."""
    return HumanEvalGate.decide(
        evaluation=4,
        candidate="ppo-run-9",
        baseline="sft",
        votes=votes,
        labelers=2,
        points=points,
        min_votes=8,
        threshold=0.5,
        timed_out=timed_out,
        timeout_hours=72,
        prompts_voted=votes if prompts is None else prompts,
        prompt_points=points if prompt_points is None else prompt_points,
    )


def test_the_human_gate_passes_fails_waits_and_times_out_with_its_reason():
    # 8 votes, 7.5 points (one tie): Wilson 95% [0.5977, 0.9934], written out from the closed form.
    passed = _human(8, 7.5)
    assert (passed.passed, passed.win_rate) == (True, 0.9375)
    assert passed.ci95 == pytest.approx((0.5977032976593509, 0.993440083067254), abs=1e-12)
    assert passed.reason == (
        "Passed: 8 votes from 2 labelers (at least 8 needed). Win rate of 'ppo-run-9' over 'sft' 93.8% "
        "(95% CI 59.8% – 99.3% over 8 prompts, ties count half): the lower bound is above 50.0%."
    )
    # 10 votes at 60%: Wilson [0.3127, 0.8318]; the lower bound is not above the threshold.
    failed = _human(10, 6.0)
    assert failed.passed is False
    assert failed.reason == (
        "Did not pass: 10 votes from 2 labelers (at least 8 needed). Win rate of 'ppo-run-9' over 'sft' 60.0% "
        "(95% CI 31.3% – 83.2% over 10 prompts, ties count half): the lower bound is not above 50.0%."
    )
    waiting = _human(5, 4.0)
    assert waiting.passed is None
    assert waiting.reason == (
        "Waiting for votes: 5 of the 8 votes needed so far (2 labelers). Win rate of 'ppo-run-9' over 'sft' "
        "80.0% (95% CI 37.6% – 96.4% over 5 prompts, ties count half): the lower bound is not above 50.0%."
    )
    timed_out = _human(5, 4.0, timed_out=True)
    assert timed_out.passed is False
    assert timed_out.reason == "Did not pass: Timed out after 72 hours with 5 of the 8 votes needed (2 labelers)."
    assert _human(0, 0.0).reason == "Waiting for votes: 0 of the 8 votes needed so far (2 labelers)."
    # 12 votes, 11 points, but on 3 prompts (4 votes each; one prompt 2.75 of 4): the same two answers
    # voted on four times are one observation. Counted per vote, Wilson(11, 12) has its lower bound at
    # 64.6% and would pass; per prompt, Wilson(2.75, 3) is [37.0%, 99.5%] and does not.
    clustered = _human(12, 11.0, prompts=3, prompt_points=2.75)
    assert (clustered.passed, clustered.win_rate) == (False, 2.75 / 3)
    assert clustered.ci95 == pytest.approx((0.3702546815131422, 0.9951644586909865), abs=1e-12)
    assert clustered.reason == (
        "Did not pass: 12 votes from 2 labelers (at least 8 needed). Win rate of 'ppo-run-9' over 'sft' 91.7% "
        "(95% CI 37.0% – 99.5% over 3 prompts, ties count half): the lower bound is not above 50.0%."
    )
    for gate in (passed, failed, waiting, timed_out, clustered):
        assert HumanEvalGate.from_json(gate.to_json()) == gate


def test_the_ppo_gate_says_which_judge_decided():
    judged = PPOGate.decide(
        candidate_reward=0.2,
        baseline_reward=0.3,
        kl=0.5,
        max_kl=10.0,
        require_improvement=True,
        prompts=4,
        judge="reward-run-2",
        judge_independent=True,
        optimised_candidate_reward=1.9,
        optimised_baseline_reward=0.1,
    )
    assert judged.passed is False  # the optimised model's 1.9 against 0.1 does not decide
    assert judged.reason == (
        "Did not pass: Held-out reward 0.200 against 0.300 for the policy it started from (not better; 4 prompts; "
        "judged by reward model 'reward-run-2', which PPO did not optimise against). "
        "KL to the reference 0.500 ≤ the limit 10.000."
    )
    assert judged.checks[-1].text == (
        "The reward model PPO optimised scores 1.900 against 0.100 (not deciding: a policy can exploit the model "
        "it was trained against)."
    )
    alone = PPOGate.decide(
        candidate_reward=1.9,
        baseline_reward=0.1,
        kl=0.5,
        max_kl=10.0,
        require_improvement=True,
        prompts=4,
        judge="reward-run-5",
        judge_independent=False,
    )
    assert alone.checks[0].text == (
        "Held-out reward 1.900 against 0.100 for the policy it started from (better; 4 prompts; judged by reward "
        "model 'reward-run-5', the one PPO optimised against (no promoted reward model that neither policy was "
        "optimised against))."
    )
    assert PPOGate.from_json(judged.to_json()) == judged
