"""Celery tasks of the quality app: the agreement refresh.

They keep the names they were registered under when they lived in ``annotation.tasks``: messages
already queued and the beat schedule (CELERY_BEAT_SCHEDULE) name them so.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
from django.db import connection

from annotation.models import Project
from quality.services import agreement_refresh_due, agreement_report_refresh

AGREEMENT_LOCK = 7316  # advisory lock class of the agreement refresh (PostgreSQL), with the project id


@shared_task(name="annotation.tasks.agreement_refresh", time_limit=600, soft_time_limit=540)
def agreement_refresh(project_id: int, force: bool = False) -> int | None:
    """Recompute one project's agreement report if rankings arrived since the last one."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return None
    with refresh_lock(project_id) as mine:
        if not mine:  # another worker is refreshing this project; the next sweep takes what it missed
            return None
        report = agreement_report_refresh(project=project, force=force)
    return report.pk if report else None


@contextmanager
def refresh_lock(project_id: int) -> Iterator[bool]:
    """One refresh per project at a time across workers (a PostgreSQL session advisory lock, taken
    without waiting); on SQLite, whose writes are serialised anyway, always granted."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [AGREEMENT_LOCK, project_id])
        granted = bool(cursor.fetchone()[0])
    try:
        yield granted
    finally:
        if granted:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [AGREEMENT_LOCK, project_id])


@shared_task(name="annotation.tasks.agreement_refresh_all")
def agreement_refresh_all() -> int:
    """Beat: queue a refresh for every active project (each one skips if fresh)."""
    ids = list(Project.objects.filter(is_active=True).values_list("id", flat=True))
    for project_id in ids:
        agreement_refresh.delay(project_id)
    return len(ids)


@shared_task(name="annotation.tasks.agreement_refresh_sweep")
def agreement_refresh_sweep() -> int:
    """Beat, every QUALITY_REFRESH_DELAY_S: refresh the projects that got rankings since their
    last report (the debounce of the refresh after submits, without delayed messages)."""
    ids = agreement_refresh_due()
    for project_id in ids:
        agreement_refresh.delay(project_id)
    return len(ids)
