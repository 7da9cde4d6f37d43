"""The Celery app: queues ``default`` (light work) and ``gpu`` (training, one at a time)."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("default"), Queue("gpu"))
app.autodiscover_tasks()


def broker_problem() -> str | None:
    """Why the broker cannot take a message now (one connection attempt, 2 s), or None."""
    if app.conf.task_always_eager:
        return None
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception as exc:  # kombu raises its own OperationalError, or the transport's
        return str(exc).splitlines()[0][:200] or type(exc).__name__
    return None
