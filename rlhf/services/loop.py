"""The loop: a run executed to its end, its gate's verdict acted on (promote what passed, start the
next stage), and the schedule that starts a reward run when enough new comparisons arrived."""

from __future__ import annotations

import logging
import shutil
import traceback
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import Project
from annotation.selectors import preference_comparisons
from audit.models import AuditAction
from audit.services import audit_record
from config.exceptions import ApplicationError
from rlhf.models import EVALUATION_OPEN, Evaluation, RunKind, RunStatus, RunTrigger, TrainingRun
from rlhf.records import RunSummary
from rlhf.services.evaluations import evaluation_chain_generate, evaluation_start
from rlhf.services.executors import execute_evaluate, execute_generate, execute_ppo, execute_reward
from rlhf.services.loop_settings import loop_settings_get
from rlhf.services.registry import model_version_promote
from rlhf.services.runs import (
    LOG_TAIL_CHARS,
    Heartbeat,
    Progress,
    RunCancelled,
    WorkerStopping,
    attempt_finish,
    attempt_hand_back,
    lost_workers,
    run_artifact_dir,
    run_log,
    stop_window,
    training_run_start,
)

logger = logging.getLogger(__name__)
EXECUTORS = {
    RunKind.GENERATE: execute_generate,
    RunKind.REWARD: execute_reward,
    RunKind.PPO: execute_ppo,
    RunKind.EVALUATE: execute_evaluate,
}


def training_run_execute(*, run_id: int) -> TrainingRun:
    """Run a queued (or interrupted) run to its end on this worker. Idempotent: a finished run is
    left alone; a run whose worker died resumes (PPO from its checkpoint) or starts clean."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().select_related("project").get(pk=run_id)
        if run.is_finished:
            return run
        if run.cancel_requested:
            run.status, run.finished_at = RunStatus.CANCELLED, timezone.now()
            run.save(update_fields=["status", "finished_at"])
            return run
        if run.status == RunStatus.RUNNING:
            alive = run.heartbeat_at is not None and run.heartbeat_at > timezone.now() - timedelta(
                seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S
            )
            if alive:  # a second message for a run an attempt is still beating for: leave it to that one
                logger.warning("run %s: attempt %s is alive; this delivery does nothing", run.pk, run.attempts)
                return run
            if lost_workers(run) >= settings.TRAINING_MAX_ATTEMPTS:
                run.status, run.finished_at = RunStatus.FAILED, timezone.now()
                run.error = f"The worker was lost {lost_workers(run)} times; giving up."
                run.save(update_fields=["status", "finished_at", "error"])
                return run
        run.status = RunStatus.RUNNING
        run.attempts += 1
        run.started_at = run.started_at or timezone.now()
        run.heartbeat_at = timezone.now()
        run.error = ""
        run.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "error"])
    run_log(run, f"attempt {run.attempts} started")
    heartbeat = Heartbeat(run)
    heartbeat.start()
    try:
        with stop_window():
            EXECUTORS[RunKind(run.kind)](run, Progress(run))
    except RunCancelled:
        heartbeat.stop()
        attempt_finish(run, RunStatus.CANCELLED, "cancelled")
        return run
    except WorkerStopping:
        heartbeat.stop()
        attempt_hand_back(run)
        return run
    except Exception as exc:
        heartbeat.stop()
        logger.exception("run %s failed", run.pk)
        run.error = "".join(traceback.format_exception(exc))[-LOG_TAIL_CHARS:]
        if attempt_finish(run, RunStatus.FAILED, f"failed: {exc}"):
            shutil.rmtree(run_artifact_dir(run) / "work", ignore_errors=True)  # no half-written model stays
        return run
    finally:
        heartbeat.stop()
    _succeed(run)
    return run


def _succeed(run: TrainingRun) -> None:
    """The attempt ended well: the run is marked succeeded and, after a reward or PPO run, its gate's
    verdict goes on the audit trail and what passed is promoted (with the loop setting auto_chain), all
    in one transaction, so that no crash leaves a succeeded run without its decision. Then the chain
    starts the next stage."""
    gated = run.kind in (RunKind.REWARD, RunKind.PPO) and run.output_version_id is not None
    try:
        loop = loop_settings_get(project=run.project)
        chain = gated and loop.auto_chain
        # With human_eval a PPO policy that passed its automatic gate waits for the labelers' verdict.
        human = chain and run.kind == RunKind.PPO and loop.human_eval
        with transaction.atomic():
            if not attempt_finish(run, RunStatus.SUCCEEDED, "succeeded"):
                return
            passed = _act_on_gate(run, promote=chain and not human) if gated else False
    except Exception as exc:
        # Rolled back: the run is still this attempt's and running. It ends failed with the cause,
        # not left for the reaper to train again.
        logger.exception("run %s: recording its end failed", run.pk)
        run.refresh_from_db(fields=["status", "finished_at", "log_tail"])
        run.error = "".join(traceback.format_exception(exc))[-LOG_TAIL_CHARS:]
        attempt_finish(run, RunStatus.FAILED, f"failed recording the run's end and gate verdict: {exc}")
        return
    if human and passed:
        _start_human_evaluation(run)
    elif chain:
        _chain_next(run, passed=passed)


def _start_human_evaluation(run: TrainingRun) -> None:
    """The PPO policy passed its automatic gate; labelers compare it blind with the policy it started
    from, and the evaluation's verdict promotes it or not (``evaluation_check``)."""
    assert run.output_version is not None and run.policy is not None
    try:
        evaluation = evaluation_start(
            project=run.project,
            candidate=run.output_version,
            baseline=run.policy,
            gated_run=run,
            actor=None,
            trigger=RunTrigger.CHAIN,
        )
        run_log(run, f"passed the automatic gate; waiting for human evaluation {evaluation.pk}")
    except Exception as exc:
        if not isinstance(exc, ApplicationError):
            logger.exception("run %s: the human evaluation did not start", run.pk)
        message = exc.message if isinstance(exc, ApplicationError) else str(exc)
        run_log(run, f"could not start the human evaluation: {message}; nothing promoted")
        evaluation_chain_generate(project=run.project, log=lambda line: run_log(run, line))


def _act_on_gate(run: TrainingRun, *, promote: bool) -> bool:
    """A reward or PPO run's gate verdict, written on the audit trail; with ``promote`` what passed is
    promoted with the gate's reason. Inside the caller's transaction; whether it passed."""
    version = run.output_version
    assert version is not None
    gate = RunSummary.from_json(run.kind, run.summary).gate
    passed = gate is not None and bool(gate.passed)
    reason = gate.reason if gate is not None else "Did not pass: the run stored no gate verdict."
    audit_record(
        actor=None,
        action=AuditAction.GATE_VERDICT,
        target=version,
        project=run.project,
        reason=reason,
        after={"gate": run.kind, "passed": passed, "run": run.pk},
    )
    if promote and passed:
        model_version_promote(version=version, actor=None, reason=reason)
    return passed


def _chain_next(run: TrainingRun, *, passed: bool) -> None:
    """With auto_chain: after a promoted reward model a PPO run starts, after a promoted policy a
    generation run; a verdict that did not pass stops the chain."""
    version = run.output_version
    assert version is not None
    if not passed:
        run_log(run, "evaluation did not pass: nothing promoted, the chain stops here")
        return
    run_log(run, f"promoted {version.name}")
    next_kind = RunKind.PPO if run.kind == RunKind.REWARD else RunKind.GENERATE
    try:
        nxt = training_run_start(project=run.project, kind=next_kind, trigger=RunTrigger.CHAIN)
        run_log(run, f"started {next_kind} run {nxt.pk}")
    except ApplicationError as exc:
        run_log(run, f"could not start the {next_kind} run: {exc.message}")


def loop_check(*, project: Project) -> TrainingRun | None:
    """The schedule: start a reward run when enough new comparisons arrived since the last one, and
    no PPO policy is waiting for a human evaluation."""
    loop = loop_settings_get(project=project)
    if not loop.auto_chain or not project.is_active:
        return None
    last = TrainingRun.objects.filter(project=project, kind=RunKind.REWARD).exclude(status=RunStatus.CANCELLED).first()
    since = (last.data_snapshot or {}).get("max_comparison_id", 0) if last else 0
    if last is not None and not last.is_finished:
        return None
    if Evaluation.objects.filter(project=project, gated_run__isnull=False, status__in=EVALUATION_OPEN).exists():
        return None  # a PPO policy waits for the labelers' verdict: the next round starts after it
    new = preference_comparisons(project=project).filter(id__gt=since).count()
    if new < loop.retrain_min_comparisons:
        return None
    try:
        return training_run_start(project=project, kind=RunKind.REWARD, trigger=RunTrigger.SCHEDULE)
    except ApplicationError as exc:
        logger.info("schedule: project %s: %s", project.pk, exc.message)
        return None
