"""The whole flow on the embedded defaults (SQLite, filesystem broker), as the README's run command
sets it up: real server process, real Celery worker. And a real worker on Redis when it is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    env.update({"VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def _call(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {seconds} s")


def _ping_through_worker(env: dict[str, str]) -> str:
    code = "import django; django.setup()\nfrom annotation.tasks import ping\nprint(ping.delay().get(timeout=90))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "default,gpu",
            "--concurrency",
            "1",
            "--pool",
            "solo",
        ],
        env=env,
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def test_embedded_defaults_run_the_whole_flow(tmp_path):
    env = _env(tmp_path)
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput", "-v0"], ["demo_data", "--no-models"]):
        subprocess.run(manage + command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "var" / "db.sqlite3").exists()
    port = free_port()
    server = subprocess.Popen(
        [*manage, "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        cwd=ROOT,
        stdout=(tmp_path / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    worker = _worker(env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        _wait_for(f"{base}/schema/")
        status, body = _call("POST", f"{base}/auth/token/", {"username": "alice", "password": "demo-password"})
        assert status == 200
        token = json.loads(body)["token"]
        projects = json.loads(_call("GET", f"{base}/projects/", token=token)[1])["results"]
        project = projects[0]
        assert (project["k"], project["overlap"], project["current_guideline_version"]) == (4, 3, 1)
        status, body = _call("POST", f"{base}/projects/{project['id']}/assignments/next/", token=token)
        assert status == 409 and json.loads(body)["code"] == "guideline_not_acknowledged"
        assert _call("POST", f"{base}/projects/{project['id']}/guidelines/1/acknowledge/", token=token)[0] == 200
        status, body = _call("POST", f"{base}/projects/{project['id']}/assignments/next/", token=token)
        assert status == 200
        lease = json.loads(body)
        ids = [r["id"] for r in lease["responses"]]
        ranks = {str(ids[0]): 1, str(ids[1]): 2, str(ids[2]): 2, str(ids[3]): 3}
        status, body = _call(
            "POST",
            f"{base}/assignments/{lease['id']}/submit/",
            {"idempotency_key": "smoke", "ranks": ranks},
            token=token,
        )
        assert status == 201 and json.loads(body)["comparisons"] == 6

        mia = json.loads(_call("POST", f"{base}/auth/token/", {"username": "mia", "password": "demo-password"})[1])[
            "token"
        ]
        status, body = _call("GET", f"{base}/projects/{project['id']}/export/", token=mia)
        rows = [json.loads(line) for line in body.decode().splitlines()]
        assert status == 200 and len(rows) == 6
        assert sum(row["is_tie"] for row in rows) == 1
        assert {row["annotator_ids"][0] for row in rows} == {"alice"}

        assert _ping_through_worker(env) == "pong"
    finally:
        for process in (server, worker):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set")
def test_a_real_worker_on_redis_runs_tasks(tmp_path):
    env = _env(tmp_path, REDIS_URL=os.environ["REDIS_URL"])
    worker = _worker(env, tmp_path / "worker.log")
    try:
        assert _ping_through_worker(env) == "pong"
    finally:
        worker.terminate()
        worker.wait(timeout=15)


def test_the_production_web_server_serves_the_api(tmp_path):
    """The Dockerfile's command (granian, its flags as written there) starts and answers a lease."""
    import re

    cmd = json.loads(re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1))
    assert cmd[0] == "granian"
    port = free_port()
    args = [str(Path(sys.executable).parent / "granian"), *cmd[1:]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    env = _env(tmp_path, DJANGO_DEBUG="0")
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput", "-v0"], ["demo_data", "--no-models"]):
        subprocess.run(manage + command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    server = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=(tmp_path / "server.log").open("w"), stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        _wait_for(f"{base}/schema/")
        status, body = _call("POST", f"{base}/auth/token/", {"username": "bob", "password": "demo-password"})
        token = json.loads(body)["token"]
        project = json.loads(_call("GET", f"{base}/projects/", token=token)[1])["results"][0]
        _call("POST", f"{base}/projects/{project['id']}/guidelines/1/acknowledge/", token=token)
        status, body = _call("POST", f"{base}/projects/{project['id']}/assignments/next/", token=token)
        assert status == 200 and len(json.loads(body)["responses"]) == project["k"]
    finally:
        server.terminate()
        server.wait(timeout=30)
