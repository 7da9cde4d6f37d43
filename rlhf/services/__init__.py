"""Writes of the loop, by area: ``registry`` (register, promote, roll back), ``loop_settings`` (how the
loop turns, run configs), ``runs`` (start, cancel, resend, reap, one attempt's machinery),
``executors`` (generate, reward, PPO) and ``loop`` (execute a run, act on its gate, the schedule).
Import from the module; the names below are kept for callers outside the app."""

from rlhf.services.loop import loop_check, training_run_execute
from rlhf.services.loop_settings import loop_settings_get, loop_settings_update
from rlhf.services.registry import model_version_promote, model_version_register, model_version_rollback
from rlhf.services.runs import (
    RunCancelled,
    WorkerStopping,
    training_run_cancel,
    training_run_start,
    training_runs_reap,
    training_runs_resend,
)

__all__ = [
    "RunCancelled",
    "WorkerStopping",
    "loop_check",
    "loop_settings_get",
    "loop_settings_update",
    "model_version_promote",
    "model_version_register",
    "model_version_rollback",
    "training_run_cancel",
    "training_run_execute",
    "training_run_start",
    "training_runs_reap",
    "training_runs_resend",
]
