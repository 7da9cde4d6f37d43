"""Writes of the model registry."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from annotation.models import Comparison, Project, Prompt, Response, ResponseOrigin
from annotation.services.text import unstorable_at
from config.exceptions import ApplicationError, Conflict, Unavailable
from labelers.types import AuthUser
from rlhf.data import comparison_rows, prompt_rows, sft_rows_for, sft_rows_from_jsonl, training_prompts
from rlhf.models import (
    MAX_RESPONSE_TOKENS,
    MIN_RESPONSE_TOKENS,
    LoopSettings,
    ModelKind,
    ModelState,
    ModelVersion,
    RunKind,
    RunStatus,
    RunTrigger,
    TrainingRun,
)
from rlhf.sources import model_source_problem
from rlhf.training.checks import model_role_problem
from rlhf.training.config import GenerationConfig, PPOConfig, RewardModelConfig
from rlhf.training.launch import Launcher, launch_ppo, launch_reward_model


def model_version_register(
    *,
    project: Project | None,
    kind: str,
    name: str,
    path: str,
    parent: ModelVersion | None = None,
    notes: str = "",
    is_reference: bool = False,
    promote: bool = False,
    trust_remote_code: bool = False,
) -> ModelVersion:
    """Register a model that exists outside the platform (an SFT checkpoint, a hub id). The path
    must be a directory under settings.MODEL_ROOTS or a hub id on settings.MODEL_HUB_ALLOWLIST; a
    model that cannot serve its role (read from its config and tokenizer) is refused here.
    trust_remote_code lets loading run the model's own code: the callers that set it are the
    server's (the management command, the Django admin), never a run config."""
    if kind not in ModelKind.values:
        raise ApplicationError(f"kind: must be one of {', '.join(ModelKind.values)}.", code="invalid")
    if not name.strip():
        raise ApplicationError("name: must not be empty.", code="invalid")
    if not path.strip():
        raise ApplicationError("path: give a local directory or a hub id.", code="invalid")
    if ModelVersion.objects.filter(project=project, kind=kind, name=name).exists():
        raise Conflict(f"name: a {kind} model named '{name}' already exists in this project.", code="name_taken")
    if is_reference and kind != ModelKind.POLICY:
        raise ApplicationError("is_reference: only a policy (the SFT model) can be the KL reference.", code="invalid")
    source = model_source_problem(path)
    if source is not None:
        raise ApplicationError(f"path: {source}", code="invalid_model")
    # Outside the transaction: reading a hub model's config and tokenizer may take a while.
    problem = model_role_problem(
        path,
        kind,
        needs_chat_template=project is not None and _has_chat_prompts(project),
        trust_remote_code=trust_remote_code,
    )
    if problem is not None:
        raise ApplicationError(problem, code="invalid_model")
    with transaction.atomic():
        try:
            with transaction.atomic():
                version = ModelVersion.objects.create(
                    project=project,
                    kind=kind,
                    name=name,
                    path=path,
                    parent=parent,
                    notes=notes,
                    is_reference=is_reference,
                    trust_remote_code=trust_remote_code,
                )
        except IntegrityError:  # registered by someone else while this model was being read
            raise Conflict(
                f"name: a {kind} model named '{name}' already exists in this project.", code="name_taken"
            ) from None
        if promote:
            version = model_version_promote(version=version)
    return version


def _has_chat_prompts(project: Project) -> bool:
    return Prompt.objects.filter(project=project, messages__isnull=False).exists()


# --- the loop: runs, promotion, rollback, the schedule ---------------------------------------------

logger = logging.getLogger(__name__)
EVAL_SAMPLES = 4  # responses per held-out prompt when a PPO policy is compared with the promoted one
PROGRESS_EVERY_S = 1.0  # progress reaches the database at most this often (and at the last step)
LOG_TAIL_CHARS = 8000
PTX_WITHOUT_SFT = (
    "{field}: PPO-ptx (ptx_coef > 0) mixes the SFT loss into each update, and this project has no SFT rows; "
    'set the loop setting sft_data_path to a JSONL file of {{"prompt", "response"}} rows on the server, '
    "or set ptx_coef to 0."
)


class WorkerStopping(BaseException):
    """The worker is shutting down (SIGTERM, a deploy): the attempt stops and hands its run back to
    the queue. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""


class RunCancelled(Exception):
    """Raised from the progress callback when someone cancelled the run."""


def loop_settings_get(*, project: Project) -> LoopSettings:
    settings_row, _ = LoopSettings.objects.get_or_create(project=project)
    return settings_row


def _promoted(project: Project, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(project=project, kind=kind, state=ModelState.PROMOTED).first()


def _reference(project: Project) -> ModelVersion | None:
    return (
        ModelVersion.objects.filter(project=project, kind=ModelKind.POLICY, is_reference=True)
        .order_by("-created_at")
        .first()
    )


# Model fields a run config may not set: the models of a run are its registered versions.
SERVER_MODEL_FIELDS = {
    "model_name_or_path": "a run's models are the project's registered model versions; register the model "
    "and promote it",
    "trust_remote_code": "whether a model may run its own code is set on its registered model version by "
    "an admin, never in a run config",
}


def _validated_config(kind: str, base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    if found := unstorable_at(overrides, "config"):
        raise ApplicationError(f"{found[0]}: {found[1]}.", code="invalid_config")
    model = overrides.get("model")
    for name, why in SERVER_MODEL_FIELDS.items():
        if isinstance(model, dict) and name in model:
            raise ApplicationError(f"config.model.{name}: {why}.", code="invalid_config")
    classes: dict[str, Any] = {"generate": GenerationConfig, "reward": RewardModelConfig, "ppo": PPOConfig}
    config_class = classes[kind]
    merged = _deep_merge(base, overrides)
    try:
        config = config_class.from_dict(merged)
        config.validate()
    except (ValueError, TypeError) as exc:
        raise ApplicationError(f"config.{exc}", code="invalid_config") from exc
    return config.to_dict()


def _model_source(version: ModelVersion) -> dict[str, Any]:
    """The model fields a run takes from its registered version (they win over any stored setting)."""
    return {"model_name_or_path": version.path, "trust_remote_code": version.trust_remote_code}


def _deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@transaction.atomic
def training_run_start(
    *,
    project: Project,
    kind: str,
    config: dict[str, Any] | None = None,
    created_by: AuthUser | None = None,
    trigger: str = RunTrigger.MANUAL,
) -> TrainingRun:
    """Queue a run on the gpu queue. Inputs are fixed now: the promoted policy (or the SFT
    reference), the SFT reference, the promoted reward model; the config is validated now."""
    if kind not in RunKind.values:
        raise ApplicationError(f"kind: must be one of {', '.join(RunKind.values)}, got {kind!r}.", code="invalid")
    if not isinstance(config, dict | type(None)):
        raise ApplicationError("config: must be an object.", code="invalid_config")
    Project.objects.select_for_update().get(pk=project.pk)  # one run start per project at a time
    active = TrainingRun.objects.filter(
        project=project, kind=kind, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
    ).first()
    if active is not None:
        raise Conflict(f"A {kind} run is already {active.status} (run {active.pk}).", code="run_active")
    loop = loop_settings_get(project=project)
    reference = _reference(project)
    policy = _promoted(project, ModelKind.POLICY) or reference
    reward = _promoted(project, ModelKind.REWARD)
    if reference is None:
        raise Conflict(
            "Register the SFT model first (a policy model version with is_reference=true).", code="no_reference"
        )
    assert policy is not None
    # The project's response length is the base of both generation and PPO; a run's own config wins.
    if kind == RunKind.GENERATE:
        base = _deep_merge(loop.generation_config, {"model": _model_source(policy)})
        base["max_new_tokens"] = loop.max_response_tokens
        run_inputs = {"policy": policy}
    elif kind == RunKind.REWARD:
        # InstructGPT: the reward model starts from the SFT model's weights with a fresh scalar head.
        base = _deep_merge(loop.reward_config, {"model": _model_source(reference)})
        run_inputs = {"reference": reference}
    else:
        if reward is None:
            raise Conflict("PPO needs a promoted reward model; train and promote one first.", code="no_reward_model")
        base = {**loop.ppo_config, "response_length": loop.max_response_tokens}
        run_inputs = {"policy": policy, "reference": reference, "reward_model": reward}
    validated = _validated_config(kind, base, config or {})
    _fit_lengths(kind, validated, explicit=_deep_merge(base, config or {}), models=list(run_inputs.values()))
    if kind == RunKind.PPO and validated["ptx_coef"] > 0 and not loop.sft_data_path:
        raise ApplicationError(PTX_WITHOUT_SFT.format(field="config.ptx_coef"), code="invalid_config")
    problem = _broker_problem()
    if problem is not None:
        raise Unavailable(f"The task queue is unreachable ({problem}); nothing was started. Retry in a moment.")
    run = TrainingRun.objects.create(
        project=project, kind=kind, config=validated, trigger=trigger, created_by=created_by, **run_inputs
    )
    run_id = run.pk
    # After commit: the row is the outbox. If the broker goes away in between, the run stays queued
    # with no task id and beat sends it again (training_runs_resend).
    transaction.on_commit(lambda: _enqueue(run_id))
    return run


def _fit_lengths(kind: str, validated: dict[str, Any], *, explicit: dict[str, Any], models: list[Any]) -> None:
    """Token lengths against the positions the run's models hold (read from their configs): a length
    left at its default is lowered to fit; one set by hand that does not fit is a 400 naming it."""
    from rlhf.training.checks import model_positions

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
        answer = "max_new_tokens" if kind == RunKind.GENERATE else "response_length"
        field, fixed = "max_prompt_length", int(validated[answer])
        if fixed >= limit:
            raise ApplicationError(
                f"max_response_tokens: {fixed} tokens leave no room for a prompt in the {limit} positions of "
                f"'{name}' (its config's max_position_embeddings); set the loop setting lower.",
                code="invalid_config",
            )
    room = limit - fixed
    if validated[field] <= room:
        return
    if field in explicit:
        what = f"{validated[field]}" + (f" + {fixed} response tokens" if fixed else "")
        raise ApplicationError(
            f"config.{field}: {what} is more than the {limit} positions of '{name}' (its config's "
            f"max_position_embeddings); give at most {room}.",
            code="invalid_config",
        )
    validated[field] = room


def _broker_problem() -> str | None:
    from config.celery import broker_problem

    return broker_problem()


def _enqueue(run_id: int) -> bool:
    """Hand a queued run to the gpu queue; False (logged, the run left for the resend sweep) when
    the broker cannot take it."""
    from rlhf.tasks import train_run

    try:
        result = train_run.apply_async(args=[run_id], queue="gpu", retry=False)
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
        from config.celery import app

        app.control.revoke(run.celery_task_id)
    return run


class _Progress:
    """The on_progress callback: throttled writes of progress, metric series and heartbeat."""

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


def _artifact_dir(run: TrainingRun) -> Path:
    return Path(settings.ARTIFACTS_ROOT) / f"project-{run.project_id}" / f"{run.kind}-run-{run.pk}"


def _log(run: TrainingRun, message: str) -> None:
    logger.info("run %s: %s", run.pk, message)
    stamp = timezone.now().strftime("%H:%M:%S")
    tail = (run.log_tail + f"{stamp} {message}\n")[-LOG_TAIL_CHARS:]
    run.log_tail = tail
    TrainingRun.objects.filter(pk=run.pk).update(log_tail=tail)


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
            if run.attempts >= settings.TRAINING_MAX_ATTEMPTS:
                run.status, run.finished_at = RunStatus.FAILED, timezone.now()
                run.error = f"The worker was lost {run.attempts} times; giving up."
                run.save(update_fields=["status", "finished_at", "error"])
                return run
        run.status = RunStatus.RUNNING
        run.attempts += 1
        run.started_at = run.started_at or timezone.now()
        run.heartbeat_at = timezone.now()
        run.error = ""
        run.save(update_fields=["status", "attempts", "started_at", "heartbeat_at", "error"])
    _log(run, f"attempt {run.attempts} started")
    heartbeat = _Heartbeat(run)
    heartbeat.start()
    try:
        executor: dict[str, Any] = {"generate": _execute_generate, "reward": _execute_reward, "ppo": _execute_ppo}
        executor[run.kind](run, _Progress(run))
    except RunCancelled:
        heartbeat.stop()
        _finish(run, RunStatus.CANCELLED, "cancelled")
        return run
    except WorkerStopping:
        heartbeat.stop()
        _hand_back(run)
        return run
    except Exception as exc:
        heartbeat.stop()
        logger.exception("run %s failed", run.pk)
        run.error = "".join(traceback.format_exception(exc))[-LOG_TAIL_CHARS:]
        if _finish(run, RunStatus.FAILED, f"failed: {exc}"):
            shutil.rmtree(_artifact_dir(run) / "work", ignore_errors=True)  # no half-written model stays
        return run
    finally:
        heartbeat.stop()
    if not _finish(run, RunStatus.SUCCEEDED, "succeeded"):
        return run
    if run.kind != RunKind.GENERATE and run.output_version_id and loop_settings_get(project=run.project).auto_chain:
        _chain(run)
    return run


def _hand_back(run: TrainingRun) -> None:
    """The worker is stopping: the run goes back to the queue now, to resume from its checkpoint on
    the next worker, instead of holding the worker's shutdown until it ends or waiting for the reaper.
    A hand-back does not count as a lost worker (TRAINING_MAX_ATTEMPTS)."""
    mine = TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts)
    if not mine.update(status=RunStatus.QUEUED, celery_task_id="", heartbeat_at=None):
        return
    run.status = RunStatus.QUEUED
    _log(run, f"attempt {run.attempts} stopped: the worker is shutting down; queued again to resume")
    _enqueue(run.pk)


def _finish(run: TrainingRun, status: str, message: str, *, heartbeat_at: Any = None) -> bool:
    """End this attempt of the run; False, changing nothing, when the run is no longer this attempt's
    (the reaper failed or re-queued it, or another attempt took it over). ``heartbeat_at``: also
    require that no beat came since (the reaper's view)."""
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
    _log(run, message)
    return True


class _Heartbeat(threading.Thread):
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


def _publish(run: TrainingRun, work_dir: Path, final_dir: Path) -> None:
    """Move a finished model into place in one rename: a half-written model never has a version. An
    attempt that lost its run (reaped, re-queued) stops here instead of replacing the run's model."""
    if not TrainingRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts).exists():
        raise RunCancelled()
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(work_dir, final_dir)


def training_launcher() -> Launcher:
    """How this worker starts training: in its own process or as a multi-process job (settings)."""
    return Launcher(
        mode=settings.TRAINING_LAUNCHER,
        num_processes=settings.TRAINING_NUM_PROCESSES,
        accelerate_config=settings.TRAINING_ACCELERATE_CONFIG,
        num_machines=settings.TRAINING_NUM_MACHINES,
        machine_rank=settings.TRAINING_MACHINE_RANK,
        main_process_ip=settings.TRAINING_MAIN_PROCESS_IP,
        main_process_port=settings.TRAINING_MAIN_PROCESS_PORT,
    )


def _execute_reward(run: TrainingRun, progress: _Progress) -> None:
    from rlhf.training import evaluate_reward_model

    loop = loop_settings_get(project=run.project)
    config = RewardModelConfig.from_dict(run.config)
    rows, snapshot = comparison_rows(
        project=run.project, include_ties=config.include_ties, weight_by_reliability=config.weight_by_reliability
    )
    run.data_snapshot = snapshot
    TrainingRun.objects.filter(pk=run.pk).update(data_snapshot=snapshot)
    _log(run, f"{snapshot['train_rows']} training and {snapshot['val_rows']} held-out comparisons")
    root = _artifact_dir(run)
    work, final = root / "work", root / "model"
    if work.exists():
        shutil.rmtree(work)  # a reward run restarts clean
    result = launch_reward_model(config, rows, output_dir=work, on_progress=progress, launcher=training_launcher())
    _publish(run, Path(result.model_path), final)
    metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, list)}
    held_out = [r for r in rows if r.split == "val" and not r.is_tie]
    previous = _promoted(run.project, ModelKind.REWARD)
    evaluation: dict[str, Any] = {
        "new_accuracy": metrics.get("reward/accuracy"),
        "min_accuracy": loop.reward_min_accuracy,
    }
    if previous is not None and held_out:
        old = evaluate_reward_model(previous.path, held_out)
        evaluation["promoted_accuracy"] = old["reward/accuracy"]
        evaluation["promoted_version"] = previous.pk
    new_accuracy = evaluation["new_accuracy"] or 0.0
    evaluation["passed"] = new_accuracy >= loop.reward_min_accuracy and new_accuracy > evaluation.get(
        "promoted_accuracy", -1.0
    )
    run.summary = {"metrics": metrics, "evaluation": evaluation, "seed": result.seed}
    run.output_version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelKind.REWARD,
        name=f"reward-run-{run.pk}",
        path=str(final),
        parent=run.reference,
        run=run,
        metrics={**metrics, "evaluation": evaluation},
        data_snapshot=snapshot,
    )


def _execute_ppo(run: TrainingRun, progress: _Progress) -> None:
    loop = loop_settings_get(project=run.project)
    prompts = training_prompts(project=run.project)
    held_out = training_prompts(project=run.project, held_out=True, limit=32)
    if not prompts:
        raise ValueError("prompts: the project has no training prompts")
    config = PPOConfig.from_dict(run.config)
    sft_rows: list[dict[str, Any]] | None = None
    sft_snapshot: dict[str, Any] = {}
    if config.ptx_coef > 0:
        sft_rows, sft_snapshot = sft_rows_for(project=run.project)
        if not sft_rows:
            raise ValueError(PTX_WITHOUT_SFT.format(field="ptx_coef"))
    run.data_snapshot = {
        "prompt_ids": [p.pk for p in prompts],
        "eval_prompt_ids": [p.pk for p in held_out],
        **sft_snapshot,
    }
    TrainingRun.objects.filter(pk=run.pk).update(data_snapshot=run.data_snapshot)
    assert run.policy is not None and run.reference is not None and run.reward_model is not None
    root = _artifact_dir(run)
    work, final = root / "work", root / "model"
    # Same work directory on a retry: run_ppo resumes from its checkpoint there.
    result = launch_ppo(
        config,
        prompt_rows(prompts=prompts),
        policy_path=run.policy.path,
        ref_path=run.reference.path,
        reward_path=run.reward_model.path,
        output_dir=work,
        sft_rows=sft_rows,
        on_progress=progress,
        resume=True,
        launcher=training_launcher(),
    )
    evaluation = policy_evaluate(
        candidate_path=result.model_path,
        baseline_path=run.policy.path,
        reward_path=run.reward_model.path,
        prompts=held_out or prompts[:16],
        config=config,
    )
    final_kl = _last(result.metrics, "ppo/kl")
    evaluation["kl"] = final_kl
    evaluation["max_kl"] = loop.ppo_max_kl
    improved = evaluation["candidate_reward"] > evaluation["baseline_reward"] or not loop.ppo_require_improvement
    evaluation["passed"] = improved and (final_kl is None or final_kl <= loop.ppo_max_kl)
    _publish(run, Path(result.model_path), final)
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    run.summary = {"metrics": metrics, "evaluation": evaluation, "samples": result.samples, "seed": result.seed}
    run.output_version = ModelVersion.objects.create(
        project=run.project,
        kind=ModelKind.POLICY,
        name=f"ppo-run-{run.pk}",
        path=str(final),
        parent=run.policy,
        run=run,
        metrics={**metrics, "evaluation": {k: v for k, v in evaluation.items() if k != "samples"}},
        data_snapshot=run.data_snapshot,
    )


def _last(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, list):
        return float(value[-1][1] if isinstance(value[-1], list | tuple) else value[-1]) if value else None
    return float(value) if isinstance(value, int | float) else None


def policy_evaluate(
    *, candidate_path: str, baseline_path: str, reward_path: str, prompts: list[Any], config: Any
) -> dict[str, Any]:
    """Mean reward-model score of a candidate and a baseline policy on the same held-out prompts
    (same seed, same sampling), with a sample table."""
    from rlhf.training import GenerationConfig, ModelConfig, generate_responses
    from rlhf.training.models import load_reward_model, render_conversation
    from rlhf.training.reward import score_texts

    rows = prompt_rows(prompts=prompts)
    out: dict[str, Any] = {"prompts": len(rows), "samples_per_prompt": EVAL_SAMPLES}
    model, tokenizer = load_reward_model(ModelConfig(model_name_or_path=reward_path, device=config.device), lora=False)
    samples: list[dict[str, Any]] = []
    per_prompt: dict[str, list[float]] = {}
    reward_max_length = max(512, config.max_prompt_length + config.response_length + 8)
    for name, path in (("candidate", candidate_path), ("baseline", baseline_path)):
        generation = GenerationConfig(
            model=ModelConfig(model_name_or_path=path, device=config.device),
            temperature=config.temperature,
            top_p=config.top_p,
            max_new_tokens=config.response_length,
            use_chat_template=config.use_chat_template,
            seed=config.seed,
        )
        # Several samples per prompt: one sample each makes the comparison a coin flip on small sets.
        groups = generate_responses(generation, rows, k=EVAL_SAMPLES)
        # Read as PPO reads its rollouts: same template choice, EOS only on responses that ended.
        texts = [
            render_conversation(
                tokenizer, row.content, r.text, use_chat_template=config.use_chat_template, finished=r.finished
            )
            for row, group in zip(rows, groups, strict=True)
            for r in group
        ]
        scores = score_texts(model, tokenizer, texts, max_length=reward_max_length)
        means = [sum(scores[i : i + EVAL_SAMPLES]) / EVAL_SAMPLES for i in range(0, len(scores), EVAL_SAMPLES)]
        per_prompt[name] = means
        out[f"{name}_reward"] = sum(means) / len(means) if means else 0.0
        for index, (row, group) in enumerate(zip(rows, groups, strict=True)):
            if index >= 8:
                break
            score = scores[index * EVAL_SAMPLES]
            if name == "candidate":
                samples.append({"prompt": row.text or row.messages, "response": group[0].text, "reward": score})
            else:
                samples[index].update({"baseline_response": group[0].text, "baseline_reward": score})
    pairs = list(zip(per_prompt["candidate"], per_prompt["baseline"], strict=True))
    out["win_rate"] = sum(1.0 if c > b else 0.5 if c == b else 0.0 for c, b in pairs) / len(pairs) if pairs else None
    out["samples"] = samples
    return out


def _execute_generate(run: TrainingRun, progress: _Progress) -> None:
    from annotation.services import response_sets_build
    from rlhf.training import GenerationConfig, generate_responses

    loop = loop_settings_get(project=run.project)
    assert run.policy is not None
    prompts = generation_batch(project=run.project, policy=run.policy, limit=loop.generate_prompts)
    if not prompts:
        raise ValueError("prompts: every training prompt already has responses from this policy")
    run.data_snapshot = {"prompt_ids": [p.pk for p in prompts]}
    config = GenerationConfig.from_dict(run.config)
    progress(0, len(prompts), {})
    groups = generate_responses(config, prompt_rows(prompts=prompts), k=run.project.k)
    with transaction.atomic():
        responses = [
            Response(
                prompt=prompt,
                text=generated.text,
                origin=ResponseOrigin.MODEL,
                model_version=run.policy,
                sampling={**generated.settings, "num_tokens": generated.num_tokens, "finished": generated.finished},
            )
            for prompt, group in zip(prompts, groups, strict=True)
            for generated in group
        ]
        Response.objects.bulk_create(responses)
        sets = response_sets_build(project=run.project, prompt_ids=[p.pk for p in prompts])
    progress(len(prompts), len(prompts), {"generate/responses": len(responses), "generate/response_sets": sets})
    finished = sum(1 for group in groups for g in group if g.finished)
    run.summary = {
        "responses": len(responses),
        "response_sets": sets,
        "finished_share": finished / max(len(responses), 1),
        "samples": [
            {"prompt": p.text or p.messages, "response": g[0].text}
            for p, g in list(zip(prompts, groups, strict=True))[:8]
        ],
    }


def generation_batch(*, project: Project, policy: ModelVersion, limit: int) -> list[Prompt]:
    """The next prompts to write responses for: training prompts this policy has not answered yet,
    those with the fewest response sets first."""
    return list(
        Prompt.objects.filter(project=project)
        .exclude(responses__model_version=policy)
        .annotate(n_sets=Count("response_sets"))
        .order_by("n_sets", "id")[:limit]
    )


@transaction.atomic
def model_version_promote(*, version: ModelVersion) -> ModelVersion:
    """Make ``version`` the promoted model of its kind in one step; the previous one is archived."""
    ModelVersion.objects.select_for_update().filter(project=version.project_id, kind=version.kind).exists()
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.state == ModelState.PROMOTED:
        return version
    ModelVersion.objects.filter(project=version.project_id, kind=version.kind, state=ModelState.PROMOTED).update(
        state=ModelState.ARCHIVED
    )
    version.state = ModelState.PROMOTED
    version.promoted_at = timezone.now()
    version.save(update_fields=["state", "promoted_at"])
    if version.kind == ModelKind.POLICY and version.project_id:
        Project.objects.filter(pk=version.project_id).update(current_policy=version)
    return version


@transaction.atomic
def model_version_rollback(*, project: Project, kind: str) -> ModelVersion:
    """Promote again the version that was promoted before the current one."""
    current = _promoted(project, kind)
    if current is None:
        raise Conflict(f"No promoted {kind} model to roll back.", code="nothing_promoted")
    previous = (
        ModelVersion.objects.filter(
            project=project, kind=kind, promoted_at__isnull=False, promoted_at__lt=current.promoted_at
        )
        .exclude(pk=current.pk)
        .order_by("-promoted_at")
        .first()
    )
    if previous is None:
        raise Conflict(f"There is no earlier promoted {kind} model to roll back to.", code="no_previous")
    ModelVersion.objects.filter(pk=current.pk).update(state=ModelState.ARCHIVED)
    previous.state = ModelState.PROMOTED
    previous.promoted_at = timezone.now()
    previous.save(update_fields=["state", "promoted_at"])
    if kind == ModelKind.POLICY:
        Project.objects.filter(pk=project.pk).update(current_policy=previous)
    return previous


def _chain(run: TrainingRun) -> None:
    """Automatic steps after a run: promote what passed, then start the next stage."""
    version = run.output_version
    assert version is not None
    evaluation = (run.summary or {}).get("evaluation", {})
    if not evaluation.get("passed"):
        _log(run, "evaluation did not pass: nothing promoted, the chain stops here")
        return
    model_version_promote(version=version)
    _log(run, f"promoted {version.name}")
    next_kind = RunKind.PPO if run.kind == RunKind.REWARD else RunKind.GENERATE
    try:
        nxt = training_run_start(project=run.project, kind=next_kind, trigger=RunTrigger.CHAIN)
        _log(run, f"started {next_kind} run {nxt.pk}")
    except ApplicationError as exc:
        _log(run, f"could not start the {next_kind} run: {exc.message}")


def loop_check(*, project: Project) -> TrainingRun | None:
    """The schedule: start a reward run when enough new comparisons arrived since the last one."""
    loop = loop_settings_get(project=project)
    if not loop.auto_chain or not project.is_active:
        return None
    last = TrainingRun.objects.filter(project=project, kind=RunKind.REWARD).exclude(status=RunStatus.CANCELLED).first()
    since = (last.data_snapshot or {}).get("max_comparison_id", 0) if last else 0
    if last is not None and not last.is_finished:
        return None
    new = Comparison.objects.filter(response_set__project=project, id__gt=since).count()
    if new < loop.retrain_min_comparisons:
        return None
    try:
        return training_run_start(project=project, kind=RunKind.REWARD, trigger=RunTrigger.SCHEDULE)
    except ApplicationError as exc:
        logger.info("schedule: project %s: %s", project.pk, exc.message)
        return None


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
        if run.attempts < settings.TRAINING_MAX_ATTEMPTS and not run.cancel_requested:
            if seen.update(status=RunStatus.QUEUED, celery_task_id="", error=lost):
                _log(run, f"attempt {run.attempts} lost its worker; queued again to resume")
                _enqueue(run.pk)
                count += 1
            continue
        run.error = lost
        if _finish(run, RunStatus.FAILED, f"failed: worker lost {run.attempts} times", heartbeat_at=run.heartbeat_at):
            shutil.rmtree(_artifact_dir(run) / "work", ignore_errors=True)
            count += 1
    return count


LOOP_SETTING_FIELDS: dict[str, tuple[type, Any, Any]] = {
    "auto_chain": (bool, None, None),
    "retrain_min_comparisons": (int, 1, None),
    "reward_min_accuracy": (float, 0.0, 1.0),
    "ppo_max_kl": (float, 0.0, None),
    "ppo_require_improvement": (bool, None, None),
    "generate_prompts": (int, 1, None),
    "max_response_tokens": (int, MIN_RESPONSE_TOKENS, MAX_RESPONSE_TOKENS),
    "sft_data_path": (str, None, None),
    "reward_config": (dict, None, None),
    "ppo_config": (dict, None, None),
    "generation_config": (dict, None, None),
}
# The response length is one loop setting, not a key of two config overrides that could disagree.
LENGTH_KEYS = {"generation_config": "max_new_tokens", "ppo_config": "response_length"}


@transaction.atomic
def loop_settings_update(*, project: Project, **fields: Any) -> LoopSettings:
    """Change how the project's loop turns; every field is checked and named when wrong."""
    loop = LoopSettings.objects.select_for_update().get(pk=loop_settings_get(project=project).pk)
    for name, value in fields.items():
        if name not in LOOP_SETTING_FIELDS:
            raise ApplicationError(f"{name}: unknown loop setting.", code="invalid")
        kind, low, high = LOOP_SETTING_FIELDS[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ApplicationError(f"{name}: must be {kind.__name__}, got {value!r}.", code="invalid")
        if low is not None and value < low:
            raise ApplicationError(f"{name}: must be at least {low}, got {value}.", code="invalid")
        if high is not None and value > high:
            raise ApplicationError(f"{name}: must be at most {high}, got {value}.", code="invalid")
        if name == "sft_data_path":
            value = str(value).strip()
            if value and value != loop.sft_data_path:
                try:
                    sft_rows_from_jsonl(value)
                except ValueError as exc:
                    raise ApplicationError(f"sft_data_path: {exc}.", code="invalid") from exc
        if name in LENGTH_KEYS and LENGTH_KEYS[name] in value:
            raise ApplicationError(
                f"{name}.{LENGTH_KEYS[name]}: the response length is the loop setting max_response_tokens "
                "(one length for generation and PPO).",
                code="invalid_config",
            )
        setattr(loop, name, value)
    for name, run_kind in (("reward_config", "reward"), ("ppo_config", "ppo"), ("generation_config", "generate")):
        if name in fields:
            base = {"model": {"model_name_or_path": "settings-check"}} if run_kind != "ppo" else {}
            try:
                _validated_config(run_kind, base, fields[name])
            except ApplicationError as exc:
                raise ApplicationError(f"{name}.{exc.message.removeprefix('config.')}", code="invalid_config") from exc
    ptx = (loop.ppo_config or {}).get("ptx_coef", 0)
    if ("ppo_config" in fields or "sft_data_path" in fields) and ptx > 0 and not loop.sft_data_path:
        raise ApplicationError(PTX_WITHOUT_SFT.format(field="ppo_config.ptx_coef"), code="invalid_config")
    loop.save()
    return loop
