"""Training runs: start, cancel, send again, reap; and the machinery of one attempt (progress,
heartbeat, compare-and-set finish, hand-back when the worker stops, publishing a model)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Project
from config.celery import broker_problem
from config.exceptions import ApplicationError, Conflict, Unavailable
from labelers.types import AuthUser
from rlhf.models import Evaluation, ModelKind, ModelVersion, RunKind, RunStatus, RunTrigger, TrainingRun
from rlhf.services.loop_settings import PTX_WITHOUT_SFT, deep_merge, loop_settings_get, run_config_validated
from rlhf.services.registry import promoted_version, reference_version
from rlhf.training.checks import model_positions

logger = logging.getLogger(__name__)
PROGRESS_EVERY_S = 1.0  # progress reaches the database at most this often (and at the last step)
LOG_TAIL_CHARS = 8000
TRAIN_TASK = "rlhf.tasks.train_run"


class WorkerStopping(BaseException):
    """The worker is shutting down (SIGTERM, a deploy): the attempt stops and hands its run back to
    the queue. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


class RunCancelled(Exception):
    """Raised from the progress callback when someone cancelled the run."""


@transaction.atomic
def training_run_start(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any] | None = None,
    created_by: AuthUser | None = None,
    trigger: str = RunTrigger.MANUAL,
    enqueue: bool = True,
    evaluation: Evaluation | None = None,
) -> TrainingRun:
    """Queue a run on the gpu queue. Inputs are fixed now: the promoted policy (or the SFT
    reference), the SFT reference, the promoted reward model; the config is validated now.
    An ``evaluate`` run writes the answers of ``evaluation`` (started by ``evaluation_start``): its
    policy is the candidate, the baseline answers with the same settings.
    ``enqueue=False``: the row only, for a caller that executes the run itself (``train --here``)."""
    if kind not in RunKind.values:
        raise ApplicationError(
            f"must be one of {', '.join(RunKind.values)}, got {kind!r}.", code="invalid", field="kind"
        )
    if not isinstance(config, dict | type(None)):
        raise ApplicationError("must be an object.", code="invalid_config", field="config")
    if (kind == RunKind.EVALUATE) != (evaluation is not None):
        raise ApplicationError(
            "an evaluate run is started by a human evaluation (POST /api/v1/projects/{id}/evaluations/).",
            code="invalid",
            field="kind",
        )
    Project.objects.select_for_update().get(pk=project.pk)  # one run start per project at a time
    # One run of a kind at a time; evaluate runs each belong to their own evaluation.
    active = TrainingRun.objects.filter(
        project=project, kind=kind, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).first()
    if active is not None and kind != RunKind.EVALUATE:
        raise Conflict(f"A {kind} run is already {active.status} (run {active.pk}).", code="run_active")
    loop = loop_settings_get(project=project)
    reference = reference_version(project)
    policy = promoted_version(project, ModelKind.POLICY) or reference
    reward = promoted_version(project, ModelKind.REWARD)
    if reference is None:
        raise Conflict(
            "Register the SFT model first (a policy model version with is_reference=true).", code="no_reference"
        )
    assert policy is not None
    # The project's response length is the base of both generation and PPO; a run's own config wins.
    if kind == RunKind.GENERATE:
        base = deep_merge(loop.generation_config, {"model": _model_source(policy)})
        base["max_new_tokens"] = loop.max_response_tokens
        run_inputs = {"policy": policy}
    elif kind == RunKind.EVALUATE:
        assert evaluation is not None
        base = deep_merge(loop.generation_config, {"model": _model_source(evaluation.candidate)})
        base["max_new_tokens"] = loop.max_response_tokens
        run_inputs = {"policy": evaluation.candidate, "reference": evaluation.baseline}
    elif kind == RunKind.REWARD:
        # InstructGPT: the reward model starts from the SFT model's weights with a fresh scalar head.
        base = deep_merge(loop.reward_config, {"model": _model_source(reference)})
        run_inputs = {"reference": reference}
    else:
        if reward is None:
            raise Conflict("PPO needs a promoted reward model; train and promote one first.", code="no_reward_model")
        base = {**loop.ppo_config, "response_length": loop.max_response_tokens}
        run_inputs = {"policy": policy, "reference": reference, "reward_model": reward}
    validated = run_config_validated(kind, base, config or {})
    _fit_lengths(kind, validated, explicit=deep_merge(base, config or {}), models=list(run_inputs.values()))
    if kind == RunKind.PPO and validated["ptx_coef"] > 0 and not loop.sft_data_path:
        raise ApplicationError(PTX_WITHOUT_SFT, code="invalid_config", field="config.ptx_coef")
    problem = _broker_problem() if enqueue else None
    if problem is not None:
        raise Unavailable(f"The task queue is unreachable ({problem}); nothing was started. Retry in a moment.")
    run = TrainingRun.objects.create(
        project=project, kind=kind, config=validated, trigger=trigger, created_by=created_by, **run_inputs
    )
    if not enqueue:
        return run
    run_id = run.pk
    # After commit: the row is the outbox. If the broker goes away in between, the run stays queued
    # with no task id and beat sends it again (training_runs_resend).
    transaction.on_commit(lambda: _enqueue(run_id))
    return run


def _fit_lengths(kind: str, validated: dict[str, Any], *, explicit: dict[str, Any], models: list[Any]) -> None:
    """Token lengths against the positions the run's models hold (read from their configs): a length
    left at its default is lowered to fit; one set by hand that does not fit is a 400 naming it."""
    known = [
        (version.name, positions)
        for version in models
        if version is not None
        and (positions := model_positions(version.path, trust_remote_code=version.trust_remote_code)) is not None
    ]
    if not known:
        return
    name, limit = min(known, key=lambda item: item[1])
    if kind == RunKind.REWARD:
        field, fixed = "max_length", 0
    else:
        answer = "max_new_tokens" if kind in (RunKind.GENERATE, RunKind.EVALUATE) else "response_length"
        field, fixed = "max_prompt_length", int(validated[answer])
        if fixed >= limit:
            raise ApplicationError(
                f"{fixed} tokens leave no room for a prompt in the {limit} positions of "
                f"'{name}' (its config's max_position_embeddings); set the loop setting lower.",
                code="invalid_config",
                field="max_response_tokens",
            )
    room = limit - fixed
    if validated[field] <= room:
        return
    if field in explicit:
        what = f"{validated[field]}" + (f" + {fixed} response tokens" if fixed else "")
        raise ApplicationError(
            f"{what} is more than the {limit} positions of '{name}' (its config's "
            f"max_position_embeddings); give at most {room}.",
            code="invalid_config",
            field=f"config.{field}",
        )
    validated[field] = room


def _model_source(version: ModelVersion) -> dict[str, Any]:
    """The model fields a run takes from its registered version (they win over any stored setting)."""
    return {"model_name_or_path": version.path, "trust_remote_code": version.trust_remote_code}


def _broker_problem() -> str | None:
    return broker_problem()


def _enqueue(run_id: int) -> bool:
    """Hand a queued run to the gpu queue; False (logged, the run left for the resend sweep) when
    the broker cannot take it. By name: the task (rlhf.tasks) sits above the services and calls them."""
    try:
        result = current_app.signature(TRAIN_TASK).apply_async(args=[run_id], queue="gpu", retry=False)
    except Exception:
        logger.exception("run %s: the broker did not take it; beat will send it again", run_id)
        return False
    TrainingRun.objects.filter(pk=run_id).update(celery_task_id=result.id or "")
    return True


def training_runs_resend() -> int:
    """Beat: queued runs that never reached the broker (no task id) are sent again."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRAINING_RESEND_AFTER_S)
    ids = TrainingRun.objects.filter(status=RunStatus.QUEUED, celery_task_id="", created_at__lt=cutoff)
    return sum(_enqueue(run_id) for run_id in ids.values_list("id", flat=True))


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel: a queued run stops now; a running one at its next progress report."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            raise Conflict(f"Run {run.pk} already {run.status}.", code="run_finished")
        run.cancel_requested = True
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.CANCELLED
            run.finished_at = timezone.now()
        run.save(update_fields=["cancel_requested", "status", "finished_at"])
    if run.celery_task_id and run.status == RunStatus.CANCELLED:
        current_app.control.revoke(run.celery_task_id)
    return run


def training_runs_reap() -> int:
    """Runs whose worker stopped beating (killed, machine lost) are queued again to resume from their
    checkpoint, up to TRAINING_MAX_ATTEMPTS attempts; then they end failed, never stay 'running'.
    Each change is a compare-and-set on the state the reaper saw."""
    cutoff = timezone.now() - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT_S)
    stale = TrainingRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff)
    count = 0
    for run in stale:
        seen = TrainingRun.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts, heartbeat_at=run.heartbeat_at
        )
        lost = f"The worker stopped reporting at {run.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC (killed or lost)."
        if lost_workers(run) < settings.TRAINING_MAX_ATTEMPTS and not run.cancel_requested:
            if seen.update(status=RunStatus.QUEUED, celery_task_id="", error=lost):
                run_log(run, f"attempt {run.attempts} lost its worker; queued again to resume")
                _enqueue(run.pk)
                count += 1
            continue
        run.error = lost
        message = f"failed: worker lost {lost_workers(run)} times"
        if attempt_finish(run, RunStatus.FAILED, message, heartbeat_at=run.heartbeat_at):
            shutil.rmtree(run_artifact_dir(run) / "work", ignore_errors=True)
            count += 1
    return count


# --- one attempt ---------------------------------------------------------------------------------


class Progress:
    """An attempt's on_progress callback: throttled writes of progress, metric series and heartbeat;
    raises RunCancelled when the run was cancelled or taken from the attempt."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run
        self.last_write = 0.0
        self.series: dict[str, list[list[float]]] = dict(run.metrics or {})

    def __call__(self, step: int, total: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.series.setdefault(key, []).append([step, float(value)])
        now = time.monotonic()
        if now - self.last_write < PROGRESS_EVERY_S and step < total:
            return
        self.last_write = now
        mine = TrainingRun.objects.filter(pk=self.run.pk, status=RunStatus.RUNNING, attempts=self.run.attempts)
        if not mine.update(progress_step=step, progress_total=total, metrics=self.series, heartbeat_at=timezone.now()):
            raise RunCancelled()  # the run was taken from this attempt (reaped, re-queued): stop here
        if TrainingRun.objects.filter(pk=self.run.pk, cancel_requested=True).exists():
            raise RunCancelled()


def run_artifact_dir(run: TrainingRun) -> Path:
    """Where a run keeps its work (``work/``, checkpoints) and its finished model."""
    return Path(settings.ARTIFACTS_ROOT) / f"project-{run.project_id}" / f"{run.kind}-run-{run.pk}"


def run_log(run: TrainingRun, message: str) -> None:
    """One line on the run's log tail (shown on its page) and in the worker's log."""
    logger.info("run %s: %s", run.pk, message)
    stamp = timezone.now().strftime("%H:%M:%S")
    tail = (run.log_tail + f"{stamp} {message}\n")[-LOG_TAIL_CHARS:]
    run.log_tail = tail
    TrainingRun.objects.filter(pk=run.pk).update(log_tail=tail)


_stop_window_open = False


@contextmanager
def stop_window() -> Iterator[None]:
    """The part of an attempt that a stopping worker may interrupt (WorkerStopping): the executor's
    work. Before it the run is not yet this attempt's; after it the attempt's last writes (status,
    gate verdict, promotion) must not be cut in half."""
    global _stop_window_open
    _stop_window_open = True
    try:
        yield
    finally:
        _stop_window_open = False


def stop_allowed() -> bool:
    """Whether this process is inside an attempt's `stop_window` now."""
    return _stop_window_open


def lost_workers(run: TrainingRun) -> int:
    """Attempts that ended with their worker lost (killed, machine gone), hand-backs left out."""
    return run.attempts - run.handbacks


def attempt_hand_back(run: TrainingRun) -> None:
    """The worker is stopping: the run goes back to the queue now, to resume from its checkpoint on
    the next worker, instead of holding the worker's shutdown until it ends or waiting for the reaper.
    A hand-back does not count as a lost worker (TRAINING_MAX_ATTEMPTS)."""
    from django.db import connection

    if not connection.in_atomic_block:
        # The stop may have landed inside a query, which psycopg leaves unfinished on this connection.
        connection.close()
    mine = TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts)
    if not mine.update(status=RunStatus.QUEUED, celery_task_id="", heartbeat_at=None, handbacks=F("handbacks") + 1):
        return
    run.status = RunStatus.QUEUED
    run_log(run, f"attempt {run.attempts} stopped: the worker is shutting down; queued again to resume")
    _enqueue(run.pk)


def attempt_finish(run: TrainingRun, status: str, message: str, *, heartbeat_at: Any = None) -> bool:
    """End this attempt of the run (a compare-and-set); False, changing nothing, when the run is no
    longer this attempt's (the reaper failed or re-queued it, or another attempt took it over).
    ``heartbeat_at``: also require that no beat came since (the reaper's view). Called inside a
    transaction, what the caller writes with it (a gate's verdict) commits with it or not at all."""
    finished_at = timezone.now()
    expected = {"heartbeat_at": heartbeat_at} if heartbeat_at is not None else {}
    updated = TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts, **expected).update(
        status=status,
        finished_at=finished_at,
        error=run.error,
        summary=run.summary,
        output_version=run.output_version,
        data_snapshot=run.data_snapshot,
    )
    if not updated:
        logger.warning("run %s: attempt %s ended (%s) after the run was taken from it", run.pk, run.attempts, status)
        return False
    run.status, run.finished_at = status, finished_at
    run_log(run, message)
    return True


class Heartbeat(threading.Thread):
    """Beats for a running attempt every TRAINING_HEARTBEAT_EVERY_S from its own thread (and database
    connection), so a phase without progress reports (loading, saving, a long step) is not taken for
    a dead worker."""

    def __init__(self, run: TrainingRun) -> None:
        super().__init__(name=f"heartbeat-run-{run.pk}", daemon=True)
        self.run_id, self.attempt = run.pk, run.attempts
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stopped.wait(settings.TRAINING_HEARTBEAT_EVERY_S):
                try:
                    TrainingRun.objects.filter(pk=self.run_id, status=RunStatus.RUNNING, attempts=self.attempt).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # a database hiccup (locked, restarting): the next beat tries again
                    logger.exception("run %s: heartbeat failed", self.run_id)
                    connection.close()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()


def attempt_publish(run: TrainingRun, work_dir: Path, final_dir: Path) -> None:
    """Move a finished model into place in one rename: a half-written model never has a version. An
    attempt that lost its run (reaped, re-queued) stops here instead of replacing the run's model."""
    if not TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts).exists():
        raise RunCancelled()
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(work_dir, final_dir)
