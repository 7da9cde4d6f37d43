"""Celery tasks of the loop. Training runs on the ``gpu`` queue: one at a time per worker,
acknowledged only when finished, so a killed worker's run is delivered again and resumes."""

from __future__ import annotations

from celery import shared_task

from annotation.models import Project
from rlhf.models import TrainingRun
from rlhf.services import loop_check, training_run_execute, training_runs_reap, training_runs_resend

TRAIN_TIME_LIMIT_S = 6 * 3600


@shared_task(
    name="rlhf.tasks.train_run",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=TRAIN_TIME_LIMIT_S,
    soft_time_limit=TRAIN_TIME_LIMIT_S - 60,
)
def train_run(run_id: int) -> str:
    """Execute one training run (generate, reward or PPO) to its end."""
    if not TrainingRun.objects.filter(pk=run_id).exists():
        return "missing"
    return training_run_execute(run_id=run_id).status


@shared_task(name="rlhf.tasks.loop_check_all")
def loop_check_all() -> int:
    """Beat: send queued runs the broker never got, re-queue (or fail) runs whose worker died, and
    start reward runs where enough new comparisons arrived."""
    training_runs_resend()
    training_runs_reap()
    started = 0
    for project in Project.objects.filter(is_active=True):
        started += loop_check(project=project) is not None
    return started
