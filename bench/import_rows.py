"""A large import: the upload request answered at once and the rows imported by a worker, against
the same file imported inside the request (the way every import ran before), on PostgreSQL.

Target (issue): a 100,000-row import must not hold a request for minutes at ~1 GB; it runs on a
worker with progress and a result page.

Both sides import the same JSONL file (``--rows`` prompts with K=4 responses each, texts of about
80 characters; 41 MB for 100,000 rows, under the 50 MB body limit) into an empty project of their
own through ``POST /api/v1/projects/{id}/import/`` as an admin (Django's test client, in a fresh
process per measurement, so each peak RSS is that step's own):

- in the request: ``IMPORT_SYNC_MAX_BYTES`` above the file's size, so the request parses, checks and
  writes every row before it answers 201;
- background: a limit of 0, so the request keeps the file and answers 202 with the job; then
  ``import_job_run`` (what the Celery task runs) imports it in its own process, with progress.

It prints, for each side, the seconds and peak memory of the request and of the worker, and the rows
stored, which must be equal. ``--repeats`` alternates the two sides.

    .venv/bin/python bench/import_rows.py [--rows 100000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PYTHON, ROOT, bench_env, database_create, database_drop, django_setup, migrate

K = 4
DB_NAME = "bench_import"


def _write_file(path: Path, rows: int) -> int:
    words = [
        "the",
        "model",
        "answers",
        "each",
        "question",
        "with",
        "care",
        "and",
        "a",
        "short",
        "reason",
        "that",
        "labelers",
        "can",
        "check",
    ]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            text = " ".join(words[(i + j) % len(words)] for j in range(8))
            record = {
                "external_id": f"q{i}",
                "prompt": f"Question {i}: {text}?",
                "tags": ["bench"],
                "responses": [f"Answer {r} to {i}: {text}." for r in range(K)],
            }
            fh.write(json.dumps(record) + "\n")
    return path.stat().st_size


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_request(project_id: int, file: Path) -> dict[str, object]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-admin"))
    before = _peak_mb()
    started = time.perf_counter()
    with file.open("rb") as fh:
        response = client.post(f"/api/v1/projects/{project_id}/import/", {"file": fh})
    seconds = time.perf_counter() - started
    body = response.json()
    return {"status": response.status_code, "seconds": seconds, "peak_mb": _peak_mb(), "base_mb": before, "body": body}


def _child_worker(job_id: int) -> dict[str, object]:
    from annotation.services.import_jobs import import_job_run

    before = _peak_mb()
    started = time.perf_counter()
    job = import_job_run(job_id=job_id)
    seconds = time.perf_counter() - started
    return {
        "status": job.status,
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "base_mb": before,
        "summary": job.summary,
        "detail": job.detail,
    }


def _run_child(mode: str, arg: int, file: Path, var_dir: Path, sync_max: int | None) -> dict[str, object]:
    extra = {"VAR_DIR": str(var_dir)}
    if sync_max is not None:
        extra["IMPORT_SYNC_MAX_BYTES"] = str(sync_max)
    out = subprocess.run(
        [PYTHON, __file__, "--child", mode, str(arg), str(file)],
        cwd=ROOT,
        env=bench_env(DB_NAME, **extra),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _stored(project_id: int) -> tuple[int, int, int]:
    from annotation.models import Prompt, Response, ResponseSet

    return (
        Prompt.objects.filter(project_id=project_id).count(),
        Response.objects.filter(prompt__project_id=project_id).count(),
        ResponseSet.objects.filter(project_id=project_id).count(),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of (in the request, background), alternated")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, arg, file = args.child
        django_setup(DB_NAME)
        result = _child_request(int(arg), Path(file)) if mode == "request" else _child_worker(int(arg))
        print(json.dumps(result, default=str))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        file = work / "rows.jsonl"
        size = _write_file(file, args.rows)
        database_create(DB_NAME)
        migrate(DB_NAME)
        django_setup(DB_NAME)
        from django.db import connection, connections

        from tests.factories import ProjectFactory, UserFactory

        UserFactory(username="bench-admin", role="admin")
        print(f"file: {args.rows} rows, K={K}, {size / 1e6:.1f} MB")
        failures = 0
        request_s: dict[str, list[float]] = {"in the request": [], "background": []}
        for repeat in range(args.repeats):
            for side in ("in the request", "background") if repeat % 2 == 0 else ("background", "in the request"):
                project = ProjectFactory(k=K, overlap=1, name=f"import {side} {repeat}")
                connections.close_all()
                sync_max = size + 1 if side == "in the request" else 0
                request = _run_child("request", project.pk, file, work, sync_max)
                worker: dict[str, object] | None = None
                if side == "background":
                    if request["status"] != 202:
                        raise SystemExit(f"background request answered {request['status']}: {request['body']}")
                    job_id = int(request["body"]["id"])  # type: ignore[index]
                    worker = _run_child("worker", job_id, file, work, None)
                elif request["status"] != 201:
                    raise SystemExit(f"import in the request answered {request['status']}: {request['body']}")
                request_s[side].append(float(request["seconds"]))  # type: ignore[arg-type]
                stored = _stored(project.pk)
                failures += stored != (args.rows, args.rows * K, args.rows)
                line = (
                    f"  {side:<15} request {request['status']} in {request['seconds']:7.2f} s, "
                    f"peak {request['peak_mb']:5.0f} MB (idle Django {request['base_mb']:.0f} MB)"
                )
                if worker is not None:
                    line += f"; worker {worker['status']} in {worker['seconds']:.2f} s, peak {worker['peak_mb']:.0f} MB"
                print(f"{line}; stored prompts/responses/sets {stored[0]}/{stored[1]}/{stored[2]}")
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")
        inline, background = (sum(v) / len(v) for v in (request_s["in the request"], request_s["background"]))
        print(
            f"upload request: {inline:.2f} s in the request vs {background:.2f} s background "
            f"({inline / background:.0f}x sooner); row counts that differ from the file: {failures}"
        )
        return 1 if failures else 0
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        database_drop(DB_NAME)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
