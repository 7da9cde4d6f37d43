"""Human evaluations: a candidate policy and a baseline answer the same held-out prompts, labelers
rank the answers blind, and the votes decide (``HumanEvalGate``). Started by hand or by the loop
after a PPO run (the loop setting human_eval), decided by the beat sweep once enough votes are in or
the deadline passes; a passed evaluation of a PPO run promotes its policy and the chain goes on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from annotation.models import Project, ResponseSet, ResponseSetStatus
from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError, Conflict
from labelers.types import AuthUser
from rlhf.data import evaluation_prompts
from rlhf.models import (
    EVALUATION_OPEN,
    Evaluation,
    EvaluationStatus,
    ModelKind,
    ModelVersion,
    RunKind,
    RunStatus,
    RunTrigger,
    TrainingRun,
)
from rlhf.selectors import evaluation_report
from rlhf.services.loop_settings import loop_settings_get
from rlhf.services.registry import model_version_promote, promoted_version, reference_version
from rlhf.services.runs import run_log, training_run_start

logger = logging.getLogger(__name__)


def evaluation_start(
    *,
    project: Project,
    candidate: ModelVersion,
    baseline: ModelVersion | None = None,
    gated_run: TrainingRun | None = None,
    actor: AuthUser | None,
    trigger: str = RunTrigger.MANUAL,
    enqueue: bool = True,
) -> Evaluation:
    """Start a blind human evaluation of ``candidate`` against ``baseline`` (default: the promoted
    policy, else the SFT reference): an ``evaluate`` run writes both policies' answers, with the
    project's loop settings for the number of prompts, votes, threshold and deadline. ``actor``: who
    started it (None: the loop)."""
    baseline = baseline or promoted_version(project, ModelKind.POLICY) or reference_version(project)
    for name, version in (("candidate", candidate), ("baseline", baseline)):
        if version is None:
            raise Conflict("Register the SFT model first.", code="no_reference", field=name)
        if version.kind != ModelKind.POLICY or version.project_id not in (None, project.pk):
            raise ApplicationError(
                f"model version {version.pk} is not a policy of this project.", code="invalid", field=name
            )
    assert baseline is not None
    if baseline.pk == candidate.pk:
        raise ApplicationError(
            "the candidate is the baseline; compare two different policies.", code="invalid", field="baseline"
        )
    open_one = Evaluation.objects.filter(
        project=project, candidate=candidate, baseline=baseline, status__in=EVALUATION_OPEN
    ).first()
    if open_one is not None:
        raise Conflict(
            f"Evaluation {open_one.pk} of these two policies is still {open_one.get_status_display().lower()}.",
            code="evaluation_active",
        )
    loop = loop_settings_get(project=project)
    prompts = len(evaluation_prompts(project=project, limit=loop.human_eval_prompts))
    if prompts == 0:
        raise Conflict(
            "the project has no held-out prompts to evaluate on: import prompts with split test.",
            code="no_prompts",
            field="human_eval_prompts",
        )
    if prompts * project.overlap < loop.human_eval_min_votes:
        raise ApplicationError(
            f"{prompts} held-out prompt{'s' if prompts != 1 else ''} with an overlap of {project.overlap} give at "
            f"most {prompts * project.overlap} votes, fewer than the {loop.human_eval_min_votes} this needs: lower "
            "it, raise the overlap or add test prompts.",
            code="invalid",
            field="human_eval_min_votes",
        )
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            project=project,
            candidate=candidate,
            baseline=baseline,
            gated_run=gated_run,
            min_votes=loop.human_eval_min_votes,
            threshold=loop.human_eval_threshold,
            timeout_hours=loop.human_eval_timeout_hours,
            created_by=actor,
        )
        run = training_run_start(
            project=project,
            kind=RunKind.EVALUATE,
            evaluation=evaluation,
            created_by=actor,
            trigger=trigger,
            enqueue=enqueue,
        )
        evaluation.run = run
        evaluation.save(update_fields=["run"])
        audit_record(
            actor=actor,
            action=AuditAction.EVALUATION_START,
            target=evaluation,
            project=project,
            reason=f"'{candidate.name}' against '{baseline.name}'"
            + (f" for PPO run {gated_run.pk}" if gated_run is not None else ""),
            after={"candidate": candidate.pk, "baseline": baseline.pk, "min_votes": loop.human_eval_min_votes},
        )
    return evaluation


def evaluation_answers_written(*, evaluation: Evaluation, prompts: int) -> None:
    """The evaluate run wrote the answers: the evaluation collects votes until its deadline."""
    evaluation.status = EvaluationStatus.COLLECTING
    evaluation.prompts = prompts
    evaluation.deadline = timezone.now() + timedelta(hours=evaluation.timeout_hours)
    evaluation.save(update_fields=["status", "prompts", "deadline"])
    Project.objects.filter(pk=evaluation.project_id).update(evaluating=True)


def _evaluating_update(project_id: int) -> None:
    """Whether the project still has an evaluation collecting votes (its items leased first)."""
    collecting = Evaluation.objects.filter(project_id=project_id, status=EvaluationStatus.COLLECTING).exists()
    Project.objects.filter(pk=project_id).update(evaluating=collecting)


def evaluation_check(*, evaluation: Evaluation) -> Evaluation:
    """Decide an open evaluation if it can be decided now: enough votes, or the deadline passed, or
    the run writing its answers ended without them. A decision is stored with its figures, goes on
    the audit trail and retires the evaluation's open items. For the evaluation of a PPO run (when
    the loop chains) a pass promotes the candidate, and whatever the outcome the next generation
    starts."""
    with transaction.atomic():
        evaluation = (
            Evaluation.objects.select_for_update(of=("self",))
            .select_related("candidate", "baseline", "run")
            .get(pk=evaluation.pk)
        )
        if not evaluation.is_open:
            return evaluation
        chain = evaluation.gated_run_id is not None and loop_settings_get(project=evaluation.project).auto_chain
        decided = (
            _cancel_without_answers(evaluation)
            if evaluation.status == EvaluationStatus.GENERATING
            else (_decide(evaluation, chain=chain))
        )
    if decided and chain:
        evaluation_chain_generate(project=evaluation.project, log=lambda line: _log_gated(evaluation, line))
    return evaluation


def _cancel_without_answers(evaluation: Evaluation) -> bool:
    """An evaluation whose run ended without writing the answers is cancelled; whether it was."""
    run = evaluation.run
    if run is not None and run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return False
    what = "was cancelled" if run is not None and run.status == RunStatus.CANCELLED else "failed"
    evaluation.status = EvaluationStatus.CANCELLED
    evaluation.verdict = {"reason": f"Not decided: the run writing the answers {what}."}
    evaluation.decided_at = timezone.now()
    evaluation.save(update_fields=["status", "verdict", "decided_at"])
    _log_gated(evaluation, evaluation.verdict["reason"] + " Nothing promoted.")
    return True


def _decide(evaluation: Evaluation, *, chain: bool) -> bool:
    """The gate's verdict on the votes so far, stored if it decides; whether it did. With ``chain``
    a pass promotes the candidate unless the promoted policy is no longer the baseline."""
    report = evaluation_report(evaluation=evaluation)
    gate = report.gate
    if gate.passed is None:
        return False
    if gate.passed:
        evaluation.status = EvaluationStatus.PASSED
    else:
        evaluation.status = EvaluationStatus.FAILED if gate.enough_votes else EvaluationStatus.TIMED_OUT
    evaluation.verdict = report.to_json()
    evaluation.decided_at = timezone.now()
    evaluation.save(update_fields=["status", "verdict", "decided_at"])
    ResponseSet.objects.filter(evaluation=evaluation, status=ResponseSetStatus.OPEN).update(
        status=ResponseSetStatus.RETIRED
    )
    _evaluating_update(evaluation.project_id)
    audit_record(
        actor=None,
        action=AuditAction.GATE_VERDICT,
        target=evaluation.candidate,
        project=evaluation.project,
        reason=gate.reason,
        after={"gate": "human", "passed": bool(gate.passed), "evaluation": evaluation.pk},
    )
    reason = gate.reason
    if chain and gate.passed:
        current = promoted_version(evaluation.project, ModelKind.POLICY) or reference_version(evaluation.project)
        if current is not None and current.pk != evaluation.baseline_id:
            reason += f" Not promoted: the promoted policy is now '{current.name}', not the baseline."
        else:
            model_version_promote(version=evaluation.candidate, actor=None, reason=gate.reason)
            reason += f" Promoted {evaluation.candidate.name}."
    elif chain:
        reason += " Nothing promoted."
    _log_gated(evaluation, f"human evaluation {evaluation.pk}: {reason}")
    return True


def evaluation_chain_generate(*, project: Project, log: Callable[[str], None]) -> None:
    """After a PPO policy's human evaluation, whatever its verdict: the promoted policy (the new one
    if it passed) writes the next round's responses, so that labelers have items and the schedule
    trains the next reward model on them."""
    try:
        nxt = training_run_start(project=project, kind=RunKind.GENERATE, trigger=RunTrigger.CHAIN)
        log(f"started generate run {nxt.pk}")
    except ApplicationError as exc:
        log(f"could not start the generate run: {exc.message}")


def _log_gated(evaluation: Evaluation, line: str) -> None:
    if evaluation.gated_run_id is not None:
        run_log(TrainingRun.objects.get(pk=evaluation.gated_run_id), line)


def evaluations_check() -> int:
    """Beat: every open evaluation checked; how many were decided."""
    decided = 0
    for evaluation in Evaluation.objects.filter(status__in=EVALUATION_OPEN).order_by("id"):
        try:
            decided += not evaluation_check(evaluation=evaluation).is_open
        except Exception:
            logger.exception("evaluation %s: the check failed", evaluation.pk)
    return decided
