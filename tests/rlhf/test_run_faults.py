"""Background work that survives faults: a run the broker could not take is sent again, a dead
worker's run is queued again (then failed after TRAINING_MAX_ATTEMPTS, its work folder removed),
a stale attempt cannot overwrite the run, the heartbeat beats on its own, a broker that is down
is a 503 and the worker outlives a broker outage."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from rlhf.models import RunStatus, TrainingRun
from rlhf.services import loop, runs
from rlhf.services.registry import model_version_register
from rlhf.services.runs import training_run_start, training_runs_reap, training_runs_resend
from tests.conftest import free_port
from tests.factories import ProjectFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tiny_models):
    project = ProjectFactory()
    model_version_register(
        project=project,
        kind="policy",
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    return project


@pytest.fixture
def broker():
    """Point the app at a broker that is down (``down()``); the real one is back after the test."""
    from config.celery import app

    saved = {key: app.conf[key] for key in ("broker_url", "task_always_eager")}

    class Broker:
        @staticmethod
        def down() -> None:
            app.conf.update(broker_url="redis://127.0.0.1:9/0", task_always_eager=False)  # nothing on port 9

        @staticmethod
        def up() -> None:
            app.conf.update(saved)

    yield Broker
    app.conf.update(saved)


@pytest.mark.django_db
def test_a_run_start_while_the_broker_is_down_is_a_503_and_saves_nothing(
    client_for, ml_engineer, project, monkeypatch, broker
):
    broker.down()
    response = client_for(ml_engineer).post(f"/api/v1/projects/{project.pk}/runs/", {"kind": "generate"}, format="json")
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    body = response.json()
    assert body["code"] == "unavailable"
    assert body["detail"].startswith("The task queue is unreachable (")
    assert body["detail"].endswith("); nothing was started. Retry in a moment.")
    assert TrainingRun.objects.count() == 0
    broker.up()  # back: the next start is accepted
    monkeypatch.setattr(runs, "_broker_problem", lambda: None)  # (no broker process in this test)
    monkeypatch.setattr(runs, "_enqueue", lambda run_id: True)
    again = client_for(ml_engineer).post(f"/api/v1/projects/{project.pk}/runs/", {"kind": "generate"}, format="json")
    assert again.status_code == 201, again.json()


@pytest.mark.django_db
def test_a_run_the_broker_did_not_take_is_sent_again_by_beat(project, monkeypatch, settings):
    from kombu.exceptions import OperationalError

    monkeypatch.setattr(runs, "_broker_problem", lambda: None)  # up at the check, gone at the send

    def gone(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("rlhf.tasks.train_run.apply_async", gone)
    run = training_run_start(project=project, kind="generate")
    assert runs._enqueue(run.pk) is False  # what the commit hook ran: logged, not raised
    run.refresh_from_db()
    assert (run.status, run.celery_task_id) == (RunStatus.QUEUED, "")
    settings.TRAINING_RESEND_AFTER_S = 0
    sent: list[int] = []

    class Result:
        id = "task-1"

    def send(args, kwargs=None, **options):
        sent.append((args[0], options["queue"]))
        return Result()

    monkeypatch.setattr("rlhf.tasks.train_run.apply_async", send)
    assert training_runs_resend() == 1
    run.refresh_from_db()
    assert sent == [(run.pk, "gpu")] and run.celery_task_id == "task-1"
    assert training_runs_resend() == 0  # sent once


@pytest.mark.django_db
def test_a_run_is_sent_by_task_name_and_an_eager_app_runs_it_here(project, broker):
    """The services name the task instead of importing rlhf.tasks; the name resolves to the registered
    task, so CELERY_TASK_ALWAYS_EAGER still runs it in this process."""
    from config.celery import app

    # Cancelled before a worker took it: the task, run here, ends it without training.
    run = TrainingRun.objects.create(project=project, kind="generate", config={}, cancel_requested=True)
    app.conf.task_always_eager = True
    assert runs._enqueue(run.pk) is True
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.celery_task_id != ""  # the eager result's id
    assert app.signature(runs.TRAIN_TASK).type.name == "rlhf.tasks.train_run"


def _stale(project, *, attempts: int, handbacks: int = 0) -> TrainingRun:
    return TrainingRun.objects.create(
        project=project,
        kind="ppo",
        config={},
        status=RunStatus.RUNNING,
        attempts=attempts,
        handbacks=handbacks,
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )


@pytest.mark.django_db
def test_attempts_a_stopping_worker_handed_back_do_not_count_as_lost_workers(project, monkeypatch, settings):
    settings.TRAINING_MAX_ATTEMPTS = 2
    sent: list[int] = []
    monkeypatch.setattr(runs, "_enqueue", lambda run_id: sent.append(run_id) or True)
    after_deploys = _stale(project, attempts=3, handbacks=2)  # two deploys, then one lost worker
    assert training_runs_reap() == 1
    after_deploys.refresh_from_db()
    assert (after_deploys.status, sent) == (RunStatus.QUEUED, [after_deploys.pk])
    lost_twice = _stale(project, attempts=4, handbacks=2)
    assert training_runs_reap() == 1
    lost_twice.refresh_from_db()
    assert lost_twice.status == RunStatus.FAILED and "failed: worker lost 2 times" in lost_twice.log_tail


def test_a_stop_outside_a_runs_stop_window_is_not_a_worker_stopping():
    from rlhf import tasks

    assert tasks._stop_the_run() is False  # no run here: nothing to hand back
    with runs.stop_window(), pytest.raises(runs.WorkerStopping):
        tasks._stopping = False
        tasks._stop_the_run()
    assert tasks._stop_the_run() is False  # the window closed again


@pytest.mark.django_db
def test_the_reaper_queues_a_dead_run_again_then_fails_it_and_cleans_its_work(project, monkeypatch, settings):
    settings.TRAINING_MAX_ATTEMPTS = 2
    settings.ARTIFACTS_ROOT = Path(settings.ARTIFACTS_ROOT).parent / f"reap-{os.getpid()}"
    sent: list[int] = []
    monkeypatch.setattr(runs, "_enqueue", lambda run_id: sent.append(run_id) or True)
    first = _stale(project, attempts=1)
    assert training_runs_reap() == 1
    first.refresh_from_db()
    assert first.status == RunStatus.QUEUED and sent == [first.pk]
    assert first.error.startswith("The worker stopped reporting at ")
    last = _stale(project, attempts=2)
    work = runs.run_artifact_dir(last) / "work"
    work.mkdir(parents=True)
    (work / "checkpoint.pt").write_bytes(b"half")
    assert training_runs_reap() == 1
    last.refresh_from_db()
    assert last.status == RunStatus.FAILED and sent == [first.pk]
    assert "failed: worker lost 2 times" in last.log_tail
    assert not work.exists()
    shutil.rmtree(settings.ARTIFACTS_ROOT, ignore_errors=True)


@pytest.mark.django_db
def test_an_attempt_that_lost_its_run_cannot_overwrite_it(project):
    run = _stale(project, attempts=1)
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)  # the reaper failed it meanwhile
    assert runs.attempt_finish(run, RunStatus.SUCCEEDED, "succeeded") is False
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=2)  # another attempt has it
    assert runs.attempt_finish(run, RunStatus.SUCCEEDED, "succeeded") is False
    run.attempts = 2
    assert runs.attempt_finish(run, RunStatus.SUCCEEDED, "succeeded") is True


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_from_its_own_thread(project, settings):
    settings.TRAINING_HEARTBEAT_EVERY_S = 0.05
    run = _stale(project, attempts=1)
    before = run.heartbeat_at
    beat = runs.Heartbeat(run)
    beat.start()
    time.sleep(0.5)  # the main thread does nothing: no progress report
    beat.stop()
    beat.join(5)
    run.refresh_from_db()
    assert run.heartbeat_at > before + timedelta(minutes=59)
    TrainingRun.objects.filter(pk=run.pk).update(attempts=2)  # a beat for another attempt changes nothing
    stale = runs.Heartbeat(run)
    stale.start()
    time.sleep(0.3)
    stale.stop()
    stale.join(5)
    frozen = TrainingRun.objects.get(pk=run.pk).heartbeat_at
    assert frozen == run.heartbeat_at


def _redis(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    raise AssertionError("redis-server did not start")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_the_worker_outlives_a_broker_outage(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    broker = _redis(port)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update(REDIS_URL=url, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=url, VAR_DIR=str(tmp_path / "var"))
    env.update(PYTHONPATH=str(ROOT), DJANGO_SETTINGS_MODULE="config.settings")
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default", "--pool", "solo",
         "--without-gossip", "--without-mingle", "-n", "outage@%h"],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    ping = [
        sys.executable,
        "-c",
        "from config.celery import app; print(app.send_task('annotation.tasks.ping').get(timeout=60))",
    ]
    try:
        first = subprocess.run(ping, env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert first.stdout.strip() == "pong", first.stderr[-2000:]
        broker.terminate()
        broker.wait(10)
        time.sleep(20)  # the outage
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        broker = _redis(port)
        after = subprocess.run(ping, env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert after.stdout.strip() == "pong", (tmp_path / "worker.log").read_text()[-3000:]
        assert worker.poll() is None
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(30)
        broker.terminate()
        broker.wait(10)


@pytest.mark.django_db
def test_a_second_delivery_leaves_a_live_attempt_alone_and_a_run_lost_too_often_fails(project, settings):
    settings.TRAINING_MAX_ATTEMPTS = 2
    alive = _stale(project, attempts=1)
    TrainingRun.objects.filter(pk=alive.pk).update(heartbeat_at=timezone.now())
    assert loop.training_run_execute(run_id=alive.pk).attempts == 1  # nothing done
    alive.refresh_from_db()
    assert (alive.status, alive.attempts) == (RunStatus.RUNNING, 1)
    lost = _stale(project, attempts=2)  # redelivered after its worker died a second time
    done = loop.training_run_execute(run_id=lost.pk)
    assert (done.status, done.attempts) == (RunStatus.FAILED, 2)
    assert done.error == "The worker was lost 2 times; giving up."


@pytest.mark.django_db
def test_progress_of_an_attempt_that_lost_its_run_stops_it(project):
    run = _stale(project, attempts=1)
    progress = runs.Progress(run)
    progress(1, 10, {"ppo/kl": 0.1})  # its own: written
    assert TrainingRun.objects.get(pk=run.pk).progress_step == 1
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED)  # the reaper took it
    progress.last_write = 0.0
    with pytest.raises(runs.RunCancelled):
        progress(2, 10, {"ppo/kl": 0.2})
    assert TrainingRun.objects.get(pk=run.pk).progress_step == 1


@pytest.mark.django_db
def test_an_attempt_that_lost_its_run_does_not_publish_its_model(project, tmp_path):
    run = _stale(project, attempts=1)
    work, final = tmp_path / "work", tmp_path / "model"
    work.mkdir()
    TrainingRun.objects.filter(pk=run.pk).update(attempts=2)  # another attempt has the run now
    with pytest.raises(runs.RunCancelled):
        runs.attempt_publish(run, work, final)
    assert work.exists() and not final.exists()
