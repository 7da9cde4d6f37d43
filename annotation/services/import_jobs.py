"""Large imports on a worker: the file is kept on disk, a job row records progress and outcome.

Small files are imported in the request (``prompts_import``); a file over IMPORT_SYNC_MAX_BYTES
becomes a job that the ``default`` queue runs with the same all-or-nothing import.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.models import ImportJob, ImportJobStatus, Project
from annotation.services.imports import prompts_import
from config.celery import broker_problem
from config.exceptions import ApplicationError, Unavailable
from labelers.types import AuthUser

logger = logging.getLogger(__name__)
PROGRESS_EVERY_ROWS = 1000
# The task that runs a job (annotation.tasks.import_run). Sent by name: the task module calls this
# one, so this one does not import it back.
IMPORT_RUN_TASK = "annotation.tasks.import_run"


def import_runs_in_background(size: int) -> bool:
    """Whether an upload of ``size`` bytes is imported by a worker rather than in the request."""
    return size > settings.IMPORT_SYNC_MAX_BYTES


def import_job_create(
    *, project: Project, content: bytes, fmt: str, file_name: str = "", created_by: AuthUser | None = None
) -> ImportJob:
    """Keep the file and queue its import (after commit). 503 when the task queue is down."""
    if fmt not in ("jsonl", "csv"):
        raise ApplicationError(f"format: must be 'jsonl' or 'csv', got {fmt!r}.", code="invalid")
    problem = broker_problem()
    if problem is not None:
        raise Unavailable(f"The task queue is unreachable ({problem}); nothing was imported. Retry in a moment.")
    folder = Path(settings.VAR_DIR) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}.{fmt}"
    path.write_bytes(content)
    job = ImportJob.objects.create(
        project=project,
        created_by=created_by,
        fmt=fmt,
        file_name=file_name[:255],
        path=str(path),
        size=len(content),
    )
    job_id = job.pk
    transaction.on_commit(lambda: _enqueue(job_id))
    return job


def _enqueue(job_id: int) -> None:
    try:
        # The signature resolves to the registered task object (the apps import their tasks at
        # start-up), so eager mode and a test's stand-in for its apply_async apply.
        current_app.signature(IMPORT_RUN_TASK).apply_async(args=[job_id], retry=False)
    except Exception:
        logger.exception("import job %s: the broker did not take it", job_id)
        ImportJob.objects.filter(pk=job_id, status=ImportJobStatus.QUEUED).update(
            status=ImportJobStatus.FAILED,
            detail="The task queue could not take the import; upload the file again.",
            finished_at=timezone.now(),
        )


def import_job_run(*, job_id: int) -> ImportJob:
    """Run a queued job to its end (a job already taken by another delivery is left alone)."""
    if not ImportJob.objects.filter(pk=job_id, status=ImportJobStatus.QUEUED).update(status=ImportJobStatus.RUNNING):
        return ImportJob.objects.get(pk=job_id)
    job = ImportJob.objects.select_related("project").get(pk=job_id)
    path = Path(job.path)

    def progress(rows: int) -> None:
        if rows % PROGRESS_EVERY_ROWS == 0:
            ImportJob.objects.filter(pk=job_id).update(rows_checked=rows)

    fields: dict[str, Any]
    try:
        summary = prompts_import(project=job.project, content=path.read_bytes(), fmt=job.fmt, on_progress=progress)
    except ApplicationError as exc:
        fields = {"status": ImportJobStatus.FAILED, "detail": exc.message, "errors": exc.errors}
    except Exception as exc:
        logger.exception("import job %s failed", job_id)
        fields = {
            "status": ImportJobStatus.FAILED,
            "detail": f"The import failed on the server ({type(exc).__name__}).",
        }
    else:
        fields = {
            "status": ImportJobStatus.SUCCEEDED,
            "summary": {
                "prompts": summary.prompts,
                "responses": summary.responses,
                "response_sets": summary.response_sets,
            },
            "rows_checked": summary.prompts,
        }
    finally:
        path.unlink(missing_ok=True)
    fields["finished_at"] = timezone.now()
    ImportJob.objects.filter(pk=job_id).update(**fields)
    job.refresh_from_db()
    return job
