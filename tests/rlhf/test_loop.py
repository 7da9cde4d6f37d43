"""The loop with a real Celery worker on Redis and PostgreSQL: comparisons in -> reward run ->
promotion -> PPO run -> promotion -> new response sets out, lineage intact; a killed worker; rollback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from annotation.models import Comparison, Response, ResponseSet
from annotation.services import assignment_lease_next, prompts_import, ranking_submit
from rlhf.models import LoopSettings, ModelState, ModelVersion, RunStatus, TrainingRun
from rlhf.services.loop import loop_check
from rlhf.services.registry import model_version_promote, model_version_register, model_version_rollback
from rlhf.services.runs import training_run_start, training_runs_reap
from tests.conftest import postgres_only
from tests.factories import ProjectFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]
TINY_PPO = {
    "total_episodes": 16,
    "batch_size": 8,
    "mini_batch_size": 4,
    "num_ppo_epochs": 1,
    "learning_rate": 1e-4,
    "device": "cpu",
}
TINY_REWARD = {"learning_rate": 1e-3, "num_epochs": 2.0, "max_length": 128, "model": {"device": "cpu"}}
TINY_GENERATION = {"model": {"device": "cpu"}}
TINY_LENGTH = 12  # LoopSettings.max_response_tokens: generation and PPO alike


@pytest.fixture(scope="module")
def sft_path(tmp_path_factory) -> str:
    from rlhf.training.tiny import train_demo_sft

    return train_demo_sft(tmp_path_factory.mktemp("sft") / "model", quick=True)["model_path"]


def _project_with_rankings(sft_path: str, *, n_prompts: int = 12):
    project = ProjectFactory(k=2, overlap=2)
    sft = model_version_register(
        project=project, kind="policy", name="sft", path=sft_path, is_reference=True, promote=True, actor=None
    )
    rows = "\n".join(
        json.dumps(
            {
                "external_id": f"p{i}",
                "prompt": f"Name a colour number {i}.",
                "split": "val" if i % 4 == 0 else "train",
                "responses": ["Blue is a calm colour.", "no"],
            }
        )
        for i in range(n_prompts)
    )
    prompts_import(project=project, content=rows, fmt="jsonl")
    for name in ("ann", "ben"):
        user = UserFactory(role="labeler", username=name)
        while (lease := assignment_lease_next(project=project, labeler=user)) is not None:
            texts = dict(lease.response_set.responses.values_list("id", "text"))
            ranks = {pk: 1 if len(text) > 3 else 2 for pk, text in texts.items()}  # the longer answer wins
            ranking_submit(assignment_id=lease.pk, labeler=user, idempotency_key=f"{name}{lease.pk}", ranks=ranks)
    LoopSettings.objects.create(
        project=project,
        retrain_min_comparisons=10,
        reward_min_accuracy=0.5,
        ppo_max_kl=1000.0,
        ppo_require_improvement=False,
        generate_prompts=4,
        max_response_tokens=TINY_LENGTH,
        reward_config=TINY_REWARD,
        ppo_config=TINY_PPO,
        generation_config=TINY_GENERATION,
    )
    return project, sft


def _worker_env(tmp_path: Path) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
            "ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
            "QUALITY_REFRESH_ON_SUBMIT": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def _start_worker(tmp_path: Path, name: str, *, pool: str = "solo") -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            "gpu",
            "--pool",
            pool,
            "--concurrency",
            "1",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env=_worker_env(tmp_path),
        cwd=ROOT,
        stdout=(tmp_path / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(worker: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def _wait(predicate, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out; worker log:\n{log.read_text()[-4000:] if log.exists() else ''}")


def needs_services(test):
    """PostgreSQL (a worker process must see the test database) and Redis (a real broker)."""
    for mark in (
        pytest.mark.django_db(transaction=True),
        postgres_only(),
        pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL not set"),
        pytest.mark.slow,
    ):
        test = mark(test)
    return test


@needs_services
def test_the_whole_chain_with_a_real_worker(sft_path, tmp_path, settings):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    project, sft = _project_with_rankings(sft_path)
    n_comparisons = Comparison.objects.filter(response_set__project=project).count()
    sets_before = ResponseSet.objects.filter(project=project).count()
    worker = _start_worker(tmp_path, "chain")
    try:
        reward_run = loop_check(project=project)
        assert reward_run is not None and reward_run.kind == "reward" and reward_run.trigger == "schedule"
        assert loop_check(project=project) is None  # one reward run at a time
        _wait(
            lambda: (
                TrainingRun.objects.filter(
                    project=project, kind="generate", status__in=["succeeded", "failed"]
                ).exists()
                or TrainingRun.objects.filter(project=project, status="failed").exists()
            ),
            300,
            tmp_path / "chain.log",
        )
    finally:
        _stop(worker)
    runs = {run.kind: run for run in TrainingRun.objects.filter(project=project)}
    assert {kind: run.status for kind, run in runs.items()} == {
        "reward": "succeeded",
        "ppo": "succeeded",
        "generate": "succeeded",
    }, {kind: run.error[-2000:] for kind, run in runs.items()}
    reward_model = ModelVersion.objects.get(project=project, kind="reward", state=ModelState.PROMOTED)
    policy = ModelVersion.objects.get(project=project, kind="policy", state=ModelState.PROMOTED)
    # Lineage: RM from the SFT weights on exactly these comparisons; policy = PPO(SFT, RM).
    assert reward_model.run_id == runs["reward"].pk and reward_model.parent_id == sft.pk
    assert reward_model.data_snapshot["comparisons"] == n_comparisons
    assert runs["ppo"].reward_model_id == reward_model.pk and runs["ppo"].reference_id == sft.pk
    assert policy.run_id == runs["ppo"].pk and policy.parent_id == sft.pk
    assert runs["ppo"].trigger == "chain" and runs["generate"].trigger == "chain"
    assert (runs["ppo"].config["response_length"], runs["generate"].config["max_new_tokens"]) == (12, 12)
    assert {"reward/offset", "reward/scale"} <= set(reward_model.metrics)
    assert runs["generate"].policy_id == policy.pk
    project.refresh_from_db()
    assert project.current_policy_id == policy.pk
    new_responses = Response.objects.filter(prompt__project=project, model_version=policy)
    assert new_responses.count() == 4 * project.k
    assert all(r.sampling["temperature"] == 1.0 and "seed" in r.sampling for r in new_responses)
    assert ResponseSet.objects.filter(project=project).count() == sets_before + 4
    assert runs["ppo"].metrics["ppo/kl"] and runs["reward"].progress_step == runs["reward"].progress_total > 0
    assert Path(policy.path, "config.json").exists()


@needs_services
def test_a_killed_worker_s_run_is_queued_again_and_resumes_on_another_worker(sft_path, tmp_path, settings):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    project, _ = _project_with_rankings(sft_path, n_prompts=8)
    from rlhf.training.tiny import build_tiny_reward_model

    model_version_register(
        project=project,
        kind="reward",
        name="rm",
        path=build_tiny_reward_model(tmp_path / "rm"),
        promote=True,
        actor=None,
    )
    LoopSettings.objects.filter(project=project).update(
        ppo_config={**TINY_PPO, "total_episodes": 8 * 40, "save_every": 1}
    )
    worker = _start_worker(tmp_path, "victim")
    try:
        run = training_run_start(project=project, kind="ppo")
        _wait(lambda: TrainingRun.objects.get(pk=run.pk).progress_step >= 2, 180, tmp_path / "victim.log")
    finally:
        _stop(worker, signal.SIGKILL)
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.RUNNING, 1)  # the worker died mid-run
    checkpoint = Path(settings.ARTIFACTS_ROOT, f"project-{project.pk}", f"ppo-run-{run.pk}", "work", "checkpoint.pt")
    assert checkpoint.exists()
    settings.TRAINING_HEARTBEAT_TIMEOUT_S = 0
    time.sleep(0.1)
    assert training_runs_reap() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.celery_task_id  # sent again
    assert "queued again to resume" in run.log_tail
    settings.TRAINING_HEARTBEAT_TIMEOUT_S = 600
    rescuer = _start_worker(tmp_path, "rescuer")
    try:
        _wait(lambda: TrainingRun.objects.get(pk=run.pk).is_finished, 300, tmp_path / "rescuer.log")
    finally:
        _stop(rescuer)
    run.refresh_from_db()
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 2), run.error[-2000:]
    # The second attempt went on from the checkpoint: no step twice, and all 40 done.
    steps = [step for step, _ in run.metrics["ppo/kl"]]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    assert not checkpoint.parent.exists()  # the work folder became the model


@needs_services
@pytest.mark.parametrize(
    "pool, signalled",
    [("solo", "the process group"), ("prefork", "the main process")],  # Ctrl-C of run.sh; docker stop
)
def test_a_worker_told_to_stop_hands_its_run_back_at_once(pool, signalled, sft_path, tmp_path, settings):
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    project, _ = _project_with_rankings(sft_path, n_prompts=8)
    from rlhf.training.tiny import build_tiny_reward_model

    model_version_register(
        project=project,
        kind="reward",
        name="rm",
        path=build_tiny_reward_model(tmp_path / "rm"),
        promote=True,
        actor=None,
    )
    LoopSettings.objects.filter(project=project).update(
        ppo_config={**TINY_PPO, "total_episodes": 8 * 1000, "save_every": 1}  # far longer than the test
    )
    worker = _start_worker(tmp_path, "stopped", pool=pool)
    try:
        run = training_run_start(project=project, kind="ppo")
        _wait(lambda: TrainingRun.objects.get(pk=run.pk).progress_step >= 2, 180, tmp_path / "stopped.log")
        started = time.monotonic()
        if signalled == "the process group":
            os.killpg(worker.pid, signal.SIGTERM)
        else:
            worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        took = time.monotonic() - started
    finally:
        _stop(worker, signal.SIGKILL)
    assert took < 30, took
    run.refresh_from_db()
    assert (run.status, run.attempts, run.handbacks, run.heartbeat_at) == (RunStatus.QUEUED, 1, 1, None), run.log_tail
    assert run.celery_task_id  # sent again, for the next worker
    assert "attempt 1 stopped: the worker is shutting down; queued again to resume" in run.log_tail
    work = Path(settings.ARTIFACTS_ROOT, f"project-{project.pk}", f"ppo-run-{run.pk}", "work")
    assert (work / "checkpoint.pt").exists()  # what the next attempt resumes from


@pytest.mark.django_db
def test_rollback_restores_the_previous_policy_for_generation(tiny_models):
    project = ProjectFactory(k=2)
    policy = tiny_models["policy"]
    sft = model_version_register(
        project=project, kind="policy", name="sft", path=policy, is_reference=True, promote=True, actor=None
    )
    v2 = model_version_register(project=project, kind="policy", name="ppo-1", path=policy, parent=sft, actor=None)
    model_version_promote(version=v2, actor=None)
    assert training_run_start(project=project, kind="generate").policy_id == v2.pk
    TrainingRun.objects.all().delete()
    restored = model_version_rollback(project=project, kind="policy", actor=None)
    assert restored.pk == sft.pk
    v2.refresh_from_db()
    project.refresh_from_db()
    assert (v2.state, restored.state, project.current_policy_id) == ("archived", "promoted", sft.pk)
    assert training_run_start(project=project, kind="generate").policy_id == sft.pk


@pytest.mark.django_db
def test_loop_settings_update_names_the_bad_field():
    from config.exceptions import ApplicationError
    from rlhf.services.loop_settings import loop_settings_update

    project = ProjectFactory()
    loop = loop_settings_update(project=project, retrain_min_comparisons=50, reward_min_accuracy=1)
    assert (loop.retrain_min_comparisons, loop.reward_min_accuracy) == (50, 1.0)
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, reward_min_accuracy=1.5)
    assert exc.value.message == "reward_min_accuracy: must be at most 1.0, got 1.5."
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, ppo_config={"kl_coef": -1})
    assert exc.value.message.startswith("ppo_config.kl_coef: ")
    with pytest.raises(ApplicationError) as exc:
        loop_settings_update(project=project, ppo_config={"colour": 1})
    assert exc.value.message == "ppo_config.colour: unknown field for PPOConfig"


@pytest.mark.django_db
def test_bad_run_config_is_a_400_naming_the_field(client_for, ml_engineer, tiny_models):
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
    response = client_for(ml_engineer).post(
        f"/api/v1/projects/{project.pk}/runs/", {"kind": "generate", "config": {"temperature": 0}}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("config.temperature: ")
    assert TrainingRun.objects.count() == 0
