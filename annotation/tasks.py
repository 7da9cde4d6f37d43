"""Celery tasks of the annotation app (the agreement refresh is the quality app's: quality.tasks)."""

from celery import shared_task

from annotation.services import leases_expire as leases_expire_service
from annotation.services.import_jobs import IMPORT_RUN_TASK, import_job_run


@shared_task(name="annotation.tasks.leases_expire")
def leases_expire() -> int:
    """Mark lapsed leases expired (beat, every minute)."""
    return leases_expire_service()


@shared_task(name="annotation.tasks.ping")
def ping() -> str:
    """A worker liveness check used by the smoke tests and the run script."""
    return "pong"


@shared_task(name=IMPORT_RUN_TASK, time_limit=3600, soft_time_limit=3540)
def import_run(job_id: int) -> str:
    """Run one background import (annotation.services.import_jobs)."""
    return import_job_run(job_id=job_id).status
