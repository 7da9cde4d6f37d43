"""The gates: each decides and explains in one record; the loop writes its verdict on the audit trail
and promotes what passed with the gate's reason; older stored shapes still read."""

from __future__ import annotations

import pytest

from audit.models import AuditEntry
from rlhf.models import ModelKind, ModelState, ModelVersion, RunKind, RunStatus, TrainingRun
from rlhf.records import PPOGate, RewardGate, RunSummary
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


def test_the_reward_gate_needs_the_minimum_and_to_beat_the_promoted_model():
    gate = RewardGate.decide(new_accuracy=0.6, min_accuracy=0.55, promoted_accuracy=0.64, promoted_version=7)
    assert gate.passed is False
    assert gate.reason == (
        "Did not pass: Held-out accuracy 60.0% ≥ the minimum 55.0%. "
        "The promoted reward model (version 7) scores 64.0% on the same pairs: not beaten."
    )
    assert RewardGate.decide(new_accuracy=0.56, min_accuracy=0.55).passed is True
    assert RewardGate.decide(new_accuracy=None, min_accuracy=0.55).passed is False  # no figure scores 0


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
        project, sft, RewardGate.decide(new_accuracy=0.5, min_accuracy=0.55), status="running"
    )
    loop._succeed(failing)
    passing = _finished_reward_run(
        project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55), status="running"
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
    run = _finished_reward_run(project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55), status="running")

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
    run = _finished_reward_run(project, sft, RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55))
    client = client_for(ml_engineer)
    body = client.get(f"/api/v1/runs/{run.pk}/").json()
    assert body["gate"] == RewardGate.decide(new_accuracy=0.7, min_accuracy=0.55).to_json()
    response = client.post(f"/api/v1/model-versions/{run.output_version_id}/promote/")
    assert response.status_code == 200
    assert response.json()["gate"] is None  # this version was made without metrics
    entry = AuditEntry.objects.get(action="model.promote", target=f"rlhf.modelversion:{run.output_version_id}")
    assert (entry.actor_id, entry.actor_name, entry.reason) == (ml_engineer.pk, "emil", "")
