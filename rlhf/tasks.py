"""Celery tasks of the loop. Training runs on the ``gpu`` queue: one at a time per worker,
acknowledged only when finished, so a killed worker's run is delivered again and resumes.

A worker told to stop (SIGTERM to it or to its process group: ``docker stop``, a deploy, Ctrl-C of
``scripts/run.sh``) does not wait for a training run to end, which can take hours: the run stops
(its training processes too) and goes back to the queue to resume from its checkpoint on the next
worker. Other tasks are short and finish first, as in any warm shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any

from billiard.process import current_process
from celery import shared_task
from celery.signals import worker_shutting_down
from celery.worker import state as worker_state

from annotation.models import Project
from rlhf.models import RunStatus, TrainingRun
from rlhf.services.evaluations import evaluations_check
from rlhf.services.loop import loop_check, training_run_execute
from rlhf.services.runs import WorkerStopping, stop_allowed, training_runs_reap, training_runs_resend

_stopping = False  # told once per run: a second SIGTERM does not interrupt the hand-back
_previous_handler: Any = None  # the pool process's SIGTERM handler while a run has ours


def _stop_the_run() -> bool:
    """Raise WorkerStopping when this process is inside a run's stop window; False when not."""
    global _stopping
    if not stop_allowed():
        return False
    if not _stopping:
        _stopping = True
        raise WorkerStopping()
    return True


def _on_sigterm(signum: int, frame: Any) -> None:
    if _stop_the_run():
        return
    # Outside a run's stop window the signal means what it meant before (a cold shutdown's terminate).
    if callable(_previous_handler):
        _previous_handler(signum, frame)
    elif _previous_handler != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _catch_sigterm() -> Any:
    """In a pool process (prefork) running a training run, SIGTERM stops the run; its previous
    handler, or None where the run is in the worker's main process (solo: Celery's own handler stays,
    and the shutdown signal below stops the run)."""
    if current_process().name == "MainProcess" or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


@worker_shutting_down.connect
def _stop_runs_on_shutdown(**_: Any) -> None:
    """In the main process, as warm shutdown begins. With the solo pool the run is in this process
    and stops here; with prefork the pool processes running a training run are told (a SIGTERM sent
    to the main process alone, as docker stop does, would otherwise leave them to finish the run).
    Pool processes running other tasks finish them."""
    _stop_the_run()
    for request in list(worker_state.active_requests):
        if request.task_name == train_run.name and request.worker_pid and request.worker_pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(request.worker_pid, signal.SIGTERM)


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
    global _stopping, _previous_handler
    if not TrainingRun.objects.filter(pk=run_id).exists():
        return "missing"
    _stopping = False
    _previous_handler = _catch_sigterm()
    try:
        return training_run_execute(run_id=run_id).status
    except WorkerStopping:  # cannot come from outside the stop window; if it did, the resend sweep sends it
        TrainingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(celery_task_id="")
        return "stopping"
    finally:
        if _previous_handler is not None:
            signal.signal(signal.SIGTERM, _previous_handler)
        _previous_handler = None


@shared_task(name="rlhf.tasks.loop_check_all")
def loop_check_all() -> int:
    """Beat: send queued runs the broker never got, re-queue (or fail) runs whose worker died, decide
    the human evaluations that can be decided, and start reward runs where enough new comparisons
    arrived."""
    training_runs_resend()
    training_runs_reap()
    evaluations_check()
    started = 0
    for project in Project.objects.filter(is_active=True):
        started += loop_check(project=project) is not None
    return started
