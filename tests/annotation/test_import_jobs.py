"""Files over IMPORT_SYNC_MAX_BYTES are imported by a worker: 202 and a job that reports progress and
ends with the summary or the per-line errors (nothing written on failure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from annotation.models import ImportJob, Prompt
from annotation.services.import_jobs import import_job_run
from tests.factories import ProjectFactory


def _rows(n: int, *, bad_line: int | None = None) -> bytes:
    rows = [{"external_id": f"p{i}", "prompt": f"Question {i}?", "responses": ["Yes.", "No."]} for i in range(n)]
    if bad_line is not None:
        rows[bad_line - 1]["prompt"] = ""
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def small_limit(settings, tmp_path):
    settings.IMPORT_SYNC_MAX_BYTES = 100
    settings.VAR_DIR = tmp_path
    return settings


@pytest.mark.django_db
def test_a_large_file_becomes_a_job_that_a_worker_runs(
    small_limit, admin_user, client_for, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[int] = []
    monkeypatch.setattr("annotation.tasks.import_run.apply_async", lambda args, kwargs=None, **kw: sent.append(args[0]))
    project = ProjectFactory(k=2)
    client = client_for(admin_user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/projects/{project.pk}/import/",
            {"file": SimpleUploadedFile("big.jsonl", _rows(5))},
            format="multipart",
        )
    assert response.status_code == 202
    job = ImportJob.objects.get()
    assert sent == [job.pk]  # queued after commit
    assert response.json()["status"] == "queued" and response.json()["id"] == job.pk
    assert Prompt.objects.filter(project=project).count() == 0  # not in the request
    assert Path(job.path).exists()
    import_job_run(job_id=job.pk)  # what the worker does
    body = client.get(f"/api/v1/import-jobs/{job.pk}/").json()
    assert (body["status"], body["summary"]) == ("succeeded", {"prompts": 5, "responses": 10, "response_sets": 5})
    assert Prompt.objects.filter(project=project).count() == 5
    assert not Path(job.path).exists()  # the kept file is removed
    assert import_job_run(job_id=job.pk).status == "succeeded"  # a second delivery changes nothing
    assert Prompt.objects.filter(project=project).count() == 5


@pytest.mark.django_db
def test_a_failed_job_keeps_the_line_errors_and_writes_nothing(small_limit, admin_user, client_for, monkeypatch):
    monkeypatch.setattr("annotation.tasks.import_run.apply_async", lambda args, kwargs=None, **kw: None)
    project = ProjectFactory(k=2)
    client_for(admin_user).post(
        f"/api/v1/projects/{project.pk}/import/",
        {"file": SimpleUploadedFile("big.jsonl", _rows(5, bad_line=4))},
        format="multipart",
    )
    job = import_job_run(job_id=ImportJob.objects.get().pk)
    assert job.status == "failed"
    assert job.errors == [{"line": 4, "field": "prompt", "message": "must not be empty"}]
    assert job.detail.startswith("1 row(s) have errors; nothing was imported.")
    assert Prompt.objects.filter(project=project).count() == 0


@pytest.mark.django_db
def test_the_import_page_polls_the_job_then_shows_its_result(small_limit, admin_user, monkeypatch):
    monkeypatch.setattr("annotation.tasks.import_run.apply_async", lambda args, kwargs=None, **kw: None)
    project = ProjectFactory(k=2)
    client = Client()
    client.force_login(admin_user)
    page = client.post(
        f"/manage/projects/{project.pk}/import/",
        {"file": SimpleUploadedFile("big.jsonl", _rows(3))},
        HTTP_HX_REQUEST="true",
    )
    job = ImportJob.objects.get()
    html = page.content.decode()
    assert page.status_code == 202
    assert f'hx-get="/manage/projects/{project.pk}/imports/{job.pk}/"' in html and 'hx-trigger="every 2s"' in html
    assert "Importing big.jsonl" in html
    import_job_run(job_id=job.pk)
    done = client.get(f"/manage/projects/{project.pk}/imports/{job.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "Imported big.jsonl: 3 prompts, 6 responses, 3 response sets." in done
    assert "hx-trigger" not in done  # finished: no more polling
