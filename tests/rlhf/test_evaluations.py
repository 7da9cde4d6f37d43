"""Human evaluations: both policies answer held-out prompts, labelers rank the answers blind like any
other item, the votes give a win rate with its interval, the gate decides with its reason, and the
evaluation's items never become reward-model data. The leaderboard rates every evaluated version."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.export import preference_rows
from annotation.models import Comparison, ResponseSet, ResponseSetStatus
from annotation.selectors import preference_comparisons
from annotation.services import assignment_lease_next, prompts_import, ranking_submit
from audit.models import AuditEntry
from config.exceptions import Conflict
from quality.loading import load_labels
from quality.services import response_set_make_gold
from rlhf.data import comparison_rows
from rlhf.models import Evaluation, EvaluationStatus, LoopSettings, ModelState, RunKind, RunStatus, TrainingRun
from rlhf.records import PPOGate
from rlhf.selectors import evaluation_report, leaderboard
from rlhf.services import loop, runs
from rlhf.services.evaluations import evaluation_check, evaluation_start, evaluations_check
from rlhf.services.executors import generation_batch
from rlhf.services.loop import training_run_execute
from rlhf.services.registry import model_version_register
from rlhf.training.stats import bradley_terry, wilson_interval
from tests.factories import ProjectFactory, UserFactory
from tests.rlhf.test_loop import _start_worker, _stop, _wait, needs_services

TINY_GENERATION = {"model": {"device": "cpu"}}


def _project(tiny_models, *, min_votes: int = 4, threshold: float = 0.25, overlap: int = 2):
    """K=2, overlap 2 (or ``overlap``); the SFT reference and a second policy (the candidate); two test prompts for
    the evaluation and two training prompts with imported answers (preference data)."""
    project = ProjectFactory(k=2, overlap=overlap)
    sft = model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    candidate = model_version_register(
        project=project, kind="policy", name="ppo-run-1", path=tiny_models["policy"], actor=None
    )
    rows = [
        {"external_id": "t1", "prompt": "What is 2 plus 6?", "split": "test", "tags": ["math"]},
        {"external_id": "t2", "prompt": "Name the capital of France.", "split": "test", "tags": ["geo"]},
        {"external_id": "p1", "prompt": "Say hello.", "responses": ["Hello there.", "no"]},
        {"external_id": "p2", "prompt": "Say bye.", "responses": ["Goodbye, friend.", "no"]},
    ]
    prompts_import(project=project, content="\n".join(json.dumps(r) for r in rows), fmt="jsonl")
    LoopSettings.objects.create(
        project=project,
        human_eval_prompts=2,
        human_eval_min_votes=min_votes,
        human_eval_threshold=threshold,
        max_response_tokens=8,
        generation_config=TINY_GENERATION,
    )
    return project, sft, candidate


def _label(project, name: str, prefer) -> None:
    """One labeler ranks every set they can lease; ``prefer(set, {response id: version id})`` gives
    the ranks of an evaluation item, the longer answer wins elsewhere."""
    user = UserFactory(role="labeler", username=name)
    while (lease := assignment_lease_next(project=project, labeler=user)) is not None:
        rows = lease.response_set.responses.values_list("id", "text", "model_version_id")
        if lease.response_set.evaluation_id is not None:
            ranks = prefer(lease.response_set, {pk: version for pk, _, version in rows})
        else:
            ranks = {pk: 1 if len(text) > 3 else 2 for pk, text, _ in rows}
        ranking_submit(assignment_id=lease.pk, labeler=user, idempotency_key=f"{name}{lease.pk}", ranks=ranks)


def _for_candidate(candidate_id: int, outcome: str):
    def prefer(response_set, versions):
        if outcome == "tie":
            return dict.fromkeys(versions, 1)
        wins = outcome == "candidate"
        return {pk: 1 if (version == candidate_id) == wins else 2 for pk, version in versions.items()}

    return prefer


@pytest.mark.django_db
def test_an_evaluation_writes_blind_items_the_votes_decide_and_no_reward_model_trains_on_them(
    tiny_models, monkeypatch, ml_engineer
):
    project, sft, candidate = _project(tiny_models)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=ml_engineer, enqueue=False)
    assert (evaluation.baseline_id, evaluation.status, evaluation.min_votes) == (sft.pk, "generating", 4)
    run = training_run_execute(run_id=evaluation.run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.prompts) == (EvaluationStatus.COLLECTING, 2)
    assert evaluation.deadline - timezone.now() > timedelta(hours=71)
    sets = ResponseSet.objects.filter(evaluation=evaluation)
    assert sorted(rs.prompt.external_id for rs in sets) == ["t1", "t2"]
    for response_set in sets:  # one answer from each policy per item (K=2)
        assert sorted(response_set.responses.values_list("model_version_id", flat=True)) == sorted(
            [sft.pk, candidate.pk]
        )
    assert run.summary["response_sets"] == 2 and run.data_snapshot["evaluation"] == evaluation.pk
    # The evaluation's answers do not count as the candidate's training answers for those prompts.
    assert {p.external_id for p in generation_batch(project=project, policy=candidate, limit=10)} >= {"t1", "t2"}

    # ann prefers the candidate on both items; ben on one, a tie on the other: 4 votes, 3.5 points.
    _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
    first = {"seen": False}

    def ben(response_set, versions):
        outcome = "tie" if first["seen"] else "candidate"
        first["seen"] = True
        return _for_candidate(candidate.pk, outcome)(response_set, versions)

    _label(project, "ben", ben)
    report = evaluation_report(evaluation=evaluation)
    assert (report.gate.votes, report.gate.labelers, report.gate.points) == (4, 2, 3.5)
    assert report.gate.win_rate == 0.875
    assert report.gate.ci95 == wilson_interval(1.75, 2)  # per prompt: t1 1.0 (ann 1, ben 1), t2 0.75
    assert report.gate.ci95 == pytest.approx((0.2641, 0.9927), abs=1e-4)  # closed form, by hand
    assert sum(t.votes for t in report.by_tag) == 4 and {t.tag for t in report.by_tag} == {"math", "geo"}
    assert [(s.votes, s.candidate != "", s.baseline != "") for s in report.samples] == [(2, True, True)] * 2

    # Preference data leaves the evaluation's comparisons out: the RM rows, the export, the schedule.
    evaluation_pairs = Comparison.objects.filter(response_set__evaluation=evaluation).count()
    assert evaluation_pairs == 4
    total = Comparison.objects.filter(response_set__project=project).count()
    rows, snapshot = comparison_rows(project=project, include_ties=True)
    assert snapshot["comparisons"] == len(rows) == total - evaluation_pairs == 4
    assert {r.prompt for r in rows} == {"Say hello.", "Say bye."}
    assert {row["prompt"] for row in preference_rows(project=project)} == {"Say hello.", "Say bye."}

    AuditEntry.objects.filter(action="gate.verdict").delete()
    decided = evaluation_check(evaluation=evaluation)
    assert decided.status == EvaluationStatus.PASSED
    reason = (
        "Passed: 4 votes from 2 labelers (at least 4 needed). Win rate of 'ppo-run-1' over 'sft' 87.5% "
        "(95% CI 26.4% – 99.3% over 2 prompts, ties count half): the lower bound is above 25.0%."
    )
    assert decided.verdict["gate"]["reason"] == reason
    entry = AuditEntry.objects.get(action="gate.verdict")
    assert (entry.actor_id, entry.target, entry.reason) == (None, f"rlhf.modelversion:{candidate.pk}", reason)
    assert AuditEntry.objects.get(action="evaluation.start").actor_id == ml_engineer.pk
    assert set(sets.values_list("status", flat=True)) == {ResponseSetStatus.COMPLETE}
    # Started by hand: the verdict promotes nothing.
    candidate.refresh_from_db()
    assert candidate.state == ModelState.CANDIDATE
    assert evaluation_report(evaluation=decided).gate.reason == reason  # the stored verdict from now on


@pytest.mark.django_db
def test_an_evaluation_waits_for_votes_then_times_out_not_promoted(tiny_models):
    project, _, candidate = _project(tiny_models, min_votes=10, overlap=5)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    assert evaluation_check(evaluation=evaluation).status == EvaluationStatus.GENERATING
    training_run_execute(run_id=evaluation.run_id)
    _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
    evaluation.refresh_from_db()
    assert evaluations_check() == 0
    assert evaluation_report(evaluation=evaluation).gate.reason.startswith(
        "Waiting for votes: 2 of the 10 votes needed so far (1 labeler)."
    )
    Evaluation.objects.filter(pk=evaluation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert evaluations_check() == 1
    evaluation.refresh_from_db()
    assert evaluation.status == EvaluationStatus.TIMED_OUT
    assert evaluation.verdict["gate"]["reason"] == (
        "Did not pass: Timed out after 72 hours with 2 of the 10 votes needed (1 labeler)."
    )
    # Its items that still wanted votes are retired: labelers get no more of them.
    assert set(ResponseSet.objects.filter(evaluation=evaluation).values_list("status", flat=True)) == {
        ResponseSetStatus.RETIRED
    }
    served = []
    _label(project, "cid", lambda response_set, versions: served.append(response_set.pk) or {})
    assert served == []  # cid ranks the two training items only
    assert Comparison.objects.filter(labeler__username="cid").count() == 2
    # The items of human evaluations never score labelers nor go to review.
    with pytest.raises(Conflict, match=r"is an item of human evaluation \d+; gold sets are only preference data."):
        response_set_make_gold(
            response_set=ResponseSet.objects.filter(evaluation=evaluation).first(), actor=None, ranks={}
        )
    assert set(load_labels(project.pk).set_id.tolist()) == set(
        ResponseSet.objects.filter(project=project, evaluation=None).values_list("id", flat=True)
    )


@pytest.mark.django_db
def test_evaluations_are_refused_when_they_compare_nothing(tiny_models, client_for, ml_engineer):
    project, sft, candidate = _project(tiny_models)
    client = client_for(ml_engineer)
    url = f"/api/v1/projects/{project.pk}/evaluations/"
    same = client.post(url, {"candidate": sft.pk, "baseline": sft.pk}, format="json")
    assert (same.status_code, same.json()["errors"]) == (
        400,
        [{"field": "baseline", "message": "the candidate is the baseline; compare two different policies."}],
    )
    other = ProjectFactory()
    stranger = model_version_register(project=other, kind="policy", name="x", path=tiny_models["policy"], actor=None)
    wrong = client.post(url, {"candidate": stranger.pk}, format="json")
    assert (wrong.status_code, wrong.json()["errors"]) == (
        400,
        [{"field": "candidate", "message": f"model version {stranger.pk} is not a policy of this project."}],
    )
    runs_api = client.post(f"/api/v1/projects/{project.pk}/runs/", {"kind": "evaluate"}, format="json")
    assert runs_api.status_code == 400 and runs_api.json()["errors"][0]["field"] == "kind"
    # Two test prompts, each ranked by 2 labelers: at most 4 votes, never the 5 asked for.
    LoopSettings.objects.filter(project=project).update(human_eval_min_votes=5)
    short = client.post(url, {"candidate": candidate.pk}, format="json")
    assert (short.status_code, short.json()["errors"]) == (
        400,
        [
            {
                "field": "human_eval_min_votes",
                "message": "2 held-out prompts with an overlap of 2 give at most 4 votes, fewer than the 5 this "
                "needs: lower it, raise the overlap or add test prompts.",
            }
        ],
    )
    assert not Evaluation.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_the_leaderboard_rates_every_evaluated_version_from_all_votes(tiny_models):
    project, sft, candidate = _project(tiny_models)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    training_run_execute(run_id=evaluation.run_id)
    _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
    turns = iter(["baseline", "candidate"])
    _label(project, "ben", lambda rs, versions: _for_candidate(candidate.pk, next(turns))(rs, versions))
    _label(project, "cid", _for_candidate(candidate.pk, "candidate"))  # nothing left: overlap 2
    board = leaderboard(project=project, resamples=50)
    # 4 votes: the candidate won 3, lost 1.
    assert [(row.name, row.votes, row.points) for row in board] == [("ppo-run-1", 4, 3.0), ("sft", 4, 1.0)]
    expected = bradley_terry([(str(candidate.pk), str(sft.pk), 1.0)] * 3 + [(str(candidate.pk), str(sft.pk), 0.0)])
    assert {row.version_id: row.rating for row in board} == {int(k): v for k, v in expected.items()}
    # Two models, 3 wins in 4 with the prior of 0.01 virtual ties each: the ratings' gap is near
    # 400 * log10(3) = 190.8 and their mean 1000.
    assert board[0].rating - board[1].rating == pytest.approx(190.8, abs=2.0)
    assert (board[0].rating + board[1].rating) / 2 == pytest.approx(1000.0)
    assert all(row.ci95 is not None and row.ci95[0] <= row.rating <= row.ci95[1] for row in board)
    assert {row.group for row in board} == {1}

    # Two more versions compared only with each other: no vote joins them to the first two.
    c2, c3 = (
        model_version_register(project=project, kind="policy", name=name, path=tiny_models["policy"], actor=None)
        for name in ("ppo-run-2", "ppo-run-3")
    )
    apart = evaluation_start(project=project, candidate=c3, baseline=c2, actor=None, enqueue=False)
    training_run_execute(run_id=apart.run_id)
    _label(project, "dan", _for_candidate(c3.pk, "candidate"))
    board = leaderboard(project=project, resamples=0)
    assert {row.name: row.group for row in board} == {"ppo-run-1": 1, "sft": 1, "ppo-run-3": 2, "ppo-run-2": 2} or {
        row.name: row.group for row in board
    } == {"ppo-run-1": 2, "sft": 2, "ppo-run-3": 1, "ppo-run-2": 1}
    assert board[0].group == 1 and board[0].to_json()["group"] == 1


@needs_services
def test_a_ppo_policy_waits_for_the_labelers_and_their_verdict_promotes_it(tiny_models, tmp_path, settings):
    """On a real worker: a PPO run that passed its automatic gate starts a human evaluation instead of
    promoting; the worker writes both policies' answers; two labelers vote; the sweep decides, the
    candidate is promoted with the verdict's reason, and the chain's generate run follows."""
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    project, sft, candidate = _project(tiny_models)
    LoopSettings.objects.filter(project=project).update(human_eval=True, auto_chain=True)
    gate = PPOGate.decide(candidate_reward=0.4, baseline_reward=0.1, kl=0.2, max_kl=10.0, require_improvement=True)
    ppo = TrainingRun.objects.create(
        project=project,
        kind=RunKind.PPO,
        status=RunStatus.RUNNING,
        attempts=1,
        policy=sft,
        reference=sft,
        output_version=candidate,
        summary={"version": 1, "metrics": {}, "evaluation": gate.to_json()},
    )
    worker = _start_worker(tmp_path, "evaluations")
    try:
        loop._succeed(ppo)
        candidate.refresh_from_db()
        assert candidate.state == ModelState.CANDIDATE  # passed the automatic gate, not promoted
        evaluation = Evaluation.objects.get(gated_run=ppo)
        assert "waiting for human evaluation" in TrainingRun.objects.get(pk=ppo.pk).log_tail
        _wait(
            lambda: (
                Evaluation.objects.filter(pk=evaluation.pk, status="collecting").exists()
                or TrainingRun.objects.filter(pk=evaluation.run_id, status="failed").exists()
            ),
            120,
            tmp_path / "evaluations.log",
        )
        assert TrainingRun.objects.get(pk=evaluation.run_id).status == RunStatus.SUCCEEDED
        _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
        _label(project, "ben", _for_candidate(candidate.pk, "candidate"))
        assert evaluations_check() == 1
        _wait(
            lambda: TrainingRun.objects.filter(
                project=project, kind="generate", status__in=["succeeded", "failed"]
            ).exists(),
            120,
            tmp_path / "evaluations.log",
        )
    finally:
        _stop(worker)
    evaluation.refresh_from_db()
    candidate.refresh_from_db()
    assert (evaluation.status, candidate.state) == (EvaluationStatus.PASSED, ModelState.PROMOTED)
    promote = AuditEntry.objects.get(action="model.promote", target=f"rlhf.modelversion:{candidate.pk}")
    assert promote.reason == evaluation.verdict["gate"]["reason"]
    assert promote.reason.startswith("Passed: 4 votes from 2 labelers (at least 4 needed).")
    generate = TrainingRun.objects.get(project=project, kind="generate")
    assert (generate.status, generate.trigger, generate.policy_id) == ("succeeded", "chain", candidate.pk)
    assert "Promoted ppo-run-1." in TrainingRun.objects.get(pk=ppo.pk).log_tail
    assert runs.TRAIN_TASK == "rlhf.tasks.train_run"


@pytest.mark.django_db
def test_answers_are_stored_in_no_telling_order_and_written_once(tiny_models, monkeypatch):
    """Response ids follow creation order, and a labeler sees them: the candidate's answers must not
    always get the lower ids. ``random.shuffle`` reversed here: the baseline's answers come first.
    A second attempt that finds the answers written (by a redelivery meanwhile) writes nothing."""
    import rlhf.training

    project, sft, candidate = _project(tiny_models)
    monkeypatch.setattr("rlhf.services.executors.random.shuffle", lambda items: items.reverse())
    first = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    assert training_run_execute(run_id=first.run_id).status == RunStatus.SUCCEEDED
    for response_set in ResponseSet.objects.filter(evaluation=first):
        by_version = dict(response_set.responses.values_list("model_version_id", "id"))
        assert by_version[sft.pk] < by_version[candidate.pk]
    again = TrainingRun.objects.get(pk=first.run_id)
    from rlhf.services.executors import execute_evaluate

    execute_evaluate(again, lambda *args: None)
    assert again.summary == {
        "evaluation_id": first.pk,
        "responses": 4,
        "response_sets": 2,
        "candidate": "ppo-run-1",
        "baseline": "sft",
    }

    # The answers of a second evaluation are being generated when another attempt writes them.
    other = model_version_register(
        project=project, kind="policy", name="ppo-run-2", path=tiny_models["policy"], actor=None
    )
    second = evaluation_start(project=project, candidate=other, actor=None, enqueue=False)
    generate = rlhf.training.generate_responses

    def meanwhile(*args, **kwargs):
        Evaluation.objects.filter(pk=second.pk).update(status=EvaluationStatus.COLLECTING)
        return generate(*args, **kwargs)

    monkeypatch.setattr(rlhf.training, "generate_responses", meanwhile)
    assert training_run_execute(run_id=second.run_id).status == RunStatus.SUCCEEDED
    assert not ResponseSet.objects.filter(evaluation=second).exists()


@pytest.mark.django_db
def test_evaluation_items_are_served_first_and_a_retired_one_stays_retired(tiny_models):
    project, _, candidate = _project(tiny_models)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    training_run_execute(run_id=evaluation.run_id)
    # The training items are nearer completion, which otherwise goes first.
    ResponseSet.objects.filter(project=project, evaluation=None).update(submitted_count=1)
    ann = UserFactory(role="labeler", username="ann")
    project.refresh_from_db()
    assert project.evaluating  # while its votes are collected
    lease = assignment_lease_next(project=project, labeler=ann)
    assert lease.response_set.evaluation_id == evaluation.pk
    # Decided while ann holds a live lease on an item that needs one more vote: her vote is taken,
    # the item stays retired (not counted complete), and nobody is served it again.
    ResponseSet.objects.filter(pk=lease.response_set_id).update(submitted_count=1)
    Evaluation.objects.filter(pk=evaluation.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    assert evaluation_check(evaluation=evaluation).status == EvaluationStatus.TIMED_OUT
    ranks = {str(r.pk): i + 1 for i, r in enumerate(lease.shown_responses)}
    ranking_submit(assignment_id=lease.pk, labeler=ann, idempotency_key="late", ranks=ranks)
    retired = ResponseSet.objects.get(pk=lease.response_set_id)
    assert (retired.status, retired.submitted_count, retired.completed_at) == (ResponseSetStatus.RETIRED, 2, None)
    project.refresh_from_db()
    assert not project.evaluating


@pytest.mark.django_db
def test_the_judge_is_a_reward_model_neither_policy_was_trained_against():
    """rm0 was promoted and never optimised against; rm1 trained p1 (the baseline), rm2 trains the
    candidate from p1. rm1 is the newest promoted before rm2, but p1 sits near a maximum of it."""
    from rlhf.models import ModelKind, ModelVersion
    from rlhf.services.registry import independent_judge, optimised_against

    project = ProjectFactory()
    now = timezone.now()

    def version(kind: str, name: str, *, promoted: int | None = None, **kwargs):
        return ModelVersion.objects.create(
            project=project,
            kind=kind,
            name=name,
            path=f"/models/{name}",
            promoted_at=now + timedelta(minutes=promoted) if promoted is not None else None,
            **kwargs,
        )

    sft = version(ModelKind.POLICY, "sft", is_reference=True)
    rm0, rm1, rm2 = (version(ModelKind.REWARD, f"rm{i}", promoted=i) for i in range(3))
    ppo1 = TrainingRun.objects.create(project=project, kind=RunKind.PPO, policy=sft, reward_model=rm1)
    p1 = version(ModelKind.POLICY, "p1", parent=sft, run=ppo1)
    assert optimised_against(p1) == {rm1.pk} and optimised_against(sft) == set()
    assert independent_judge(project, candidate_parent=p1, optimised=rm2) == rm0
    assert independent_judge(project, candidate_parent=sft, optimised=rm2) == rm1
    ModelVersion.objects.filter(pk=rm0.pk).update(promoted_at=None)
    assert independent_judge(project, candidate_parent=p1, optimised=rm2) is None


@pytest.mark.django_db
def test_whatever_a_ppo_policys_evaluation_decides_the_next_round_starts(tiny_models):
    """The loop waits for the labelers and trains no reward model meanwhile; a refused policy is not
    promoted and the promoted one writes the next round; an evaluation that cannot start (too few
    votes possible) says why and the next round starts too."""
    project, sft, candidate = _project(tiny_models)
    LoopSettings.objects.filter(project=project).update(human_eval=True, auto_chain=True, retrain_min_comparisons=1)
    gate = PPOGate.decide(candidate_reward=0.4, baseline_reward=0.1, kl=0.2, max_kl=10.0, require_improvement=True)

    def ppo_run(output):
        return TrainingRun.objects.create(
            project=project,
            kind=RunKind.PPO,
            status=RunStatus.RUNNING,
            attempts=1,
            policy=sft,
            reference=sft,
            output_version=output,
            summary={"version": 1, "metrics": {}, "evaluation": gate.to_json()},
        )

    ppo = ppo_run(candidate)
    loop._succeed(ppo)
    evaluation = Evaluation.objects.get(gated_run=ppo)
    training_run_execute(run_id=evaluation.run_id)
    _label(project, "ann", _for_candidate(candidate.pk, "baseline"))
    assert preference_comparisons(project=project).count() == 2
    assert loop.loop_check(project=project) is None  # the policy waits: no reward run
    _label(project, "ben", _for_candidate(candidate.pk, "baseline"))
    assert evaluations_check() == 1
    evaluation.refresh_from_db()
    candidate.refresh_from_db()
    assert (evaluation.status, candidate.state) == (EvaluationStatus.FAILED, ModelState.CANDIDATE)
    generate = TrainingRun.objects.get(project=project, kind=RunKind.GENERATE)
    assert (generate.trigger, generate.policy_id) == ("chain", sft.pk)
    log = TrainingRun.objects.get(pk=ppo.pk).log_tail
    assert f"human evaluation {evaluation.pk}: Did not pass: " in log and "Nothing promoted." in log
    assert f"started generate run {generate.pk}" in log
    assert loop.loop_check(project=project).kind == RunKind.REWARD  # decided: the schedule goes on

    TrainingRun.objects.filter(project=project).exclude(pk=ppo.pk).update(status=RunStatus.CANCELLED)
    LoopSettings.objects.filter(project=project).update(human_eval_min_votes=5)
    other = model_version_register(
        project=project, kind="policy", name="ppo-run-2", path=tiny_models["policy"], actor=None
    )
    refused = ppo_run(other)
    loop._succeed(refused)
    assert not Evaluation.objects.filter(gated_run=refused).exists()
    log = TrainingRun.objects.get(pk=refused.pk).log_tail
    assert "could not start the human evaluation: human_eval_min_votes: 2 held-out prompts with an overlap of 2" in log
    nxt = TrainingRun.objects.get(project=project, kind=RunKind.GENERATE, status=RunStatus.QUEUED)
    assert f"started generate run {nxt.pk}" in log


@pytest.mark.django_db
def test_two_evaluations_write_their_answers_side_by_side(tiny_models):
    """Each evaluate run belongs to its own evaluation: a queued one does not refuse the next (the
    loop's evaluation of a PPO policy must not fail because someone started one by hand)."""
    project, _, candidate = _project(tiny_models)
    other = model_version_register(
        project=project, kind="policy", name="ppo-run-2", path=tiny_models["policy"], actor=None
    )
    first = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    second = evaluation_start(project=project, candidate=other, actor=None, enqueue=False)
    queued = TrainingRun.objects.filter(kind=RunKind.EVALUATE, status=RunStatus.QUEUED)
    assert sorted(queued.values_list("pk", flat=True)) == sorted([first.run_id, second.run_id])
