"""The agreement tasks moved to quality.tasks under the names they were registered with before:
queued messages and the beat schedule name them so."""

from __future__ import annotations

from django.conf import settings

from config.celery import app
from quality import tasks


def test_the_agreement_tasks_keep_their_registered_names():
    assert (tasks.agreement_refresh.name, tasks.agreement_refresh_all.name, tasks.agreement_refresh_sweep.name) == (
        "annotation.tasks.agreement_refresh",
        "annotation.tasks.agreement_refresh_all",
        "annotation.tasks.agreement_refresh_sweep",
    )


def test_a_worker_finds_every_task_the_beat_schedule_names():
    app.loader.import_default_modules()  # what a worker does at start: autodiscover each app's tasks
    scheduled = sorted(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())
    assert [name for name in scheduled if name not in app.tasks] == []
    assert app.tasks["annotation.tasks.agreement_refresh_sweep"] is tasks.agreement_refresh_sweep._get_current_object()
