from celery import shared_task

from annotation.services import leases_expire as leases_expire_service


@shared_task(name="annotation.tasks.leases_expire")
def leases_expire() -> int:
    """Mark lapsed leases expired (beat, every minute)."""
    return leases_expire_service()


@shared_task(name="annotation.tasks.ping")
def ping() -> str:
    """A worker liveness check used by the smoke tests and the run script."""
    return "pong"
