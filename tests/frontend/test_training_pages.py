"""The training pages through Django's test client. Runs are rows written here with the metrics and
summary a worker stores; nothing trains, and the broker is patched out of ``training_run_start``.

The worked example: SFT policy ``sft`` (the reference), reward model ``rm-1`` promoted; reward run
A made ``reward-run-A`` (held-out accuracy 0.68 against rm-1's 0.64, human agreement 0.726);
PPO run B started from ``sft`` and made ``ppo-run-B``, whose evaluation scored three held-out
prompts: B wins two (0.9 > 0.1, 0.5 > 0.3), loses one (0.2 < 0.4): win rate 2/3, means 0.533 and
0.267."""

from __future__ import annotations

import html as html_module
import re
from datetime import timedelta
from unittest import mock

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEntry
from labelers.models import Role
from rlhf.models import LoopSettings, ModelKind, ModelState, ModelVersion, RunKind, RunStatus, TrainingRun
from rlhf.services.registry import model_version_register
from tests.factories import ProjectFactory

pytestmark = pytest.mark.django_db

SAMPLES = [
    {"prompt": "Name a prime.", "response": "7", "reward": 0.9, "baseline_response": "9", "baseline_reward": 0.1},
    {
        "prompt": [{"role": "user", "content": "Say hi"}],
        "response": "Hi!",
        "reward": 0.5,
        "baseline_response": "hello",
        "baseline_reward": 0.3,
    },
    {"prompt": "2+2?", "response": "5", "reward": 0.2, "baseline_response": "4", "baseline_reward": 0.4},
]


@pytest.fixture
def loop(tmp_path, tiny_models):
    project = ProjectFactory(name="Loop")
    sft = model_version_register(
        project=project,
        kind=ModelKind.POLICY,
        name="sft",
        path=tiny_models["policy"],
        is_reference=True,
        promote=True,
        actor=None,
    )
    rm1 = model_version_register(
        project=project, kind=ModelKind.REWARD, name="rm-1", path=tiny_models["reward"], promote=True, actor=None
    )
    now = timezone.now()
    reward_run = TrainingRun.objects.create(
        project=project,
        kind=RunKind.REWARD,
        status=RunStatus.SUCCEEDED,
        reference=sft,
        config={"learning_rate": 1e-5, "num_epochs": 1},
        progress_step=40,
        progress_total=40,
        started_at=now - timedelta(minutes=10),
        finished_at=now - timedelta(minutes=5),
        metrics={
            "reward/loss": [[10, 0.69], [20, 0.61], [30, 0.55], [40, 0.52]],
            "reward/accuracy": [[40, 0.68]],
            "reward/human_agreement": [[40, 0.726]],
        },
        summary={
            "metrics": {"reward/accuracy": 0.68, "reward/human_agreement": 0.726, "reward/eval_pairs": 50},
            "evaluation": {
                "new_accuracy": 0.68,
                "min_accuracy": 0.55,
                "promoted_accuracy": 0.64,
                "promoted_version": rm1.pk,
                "passed": True,
            },
        },
        log_tail="13:00:01 attempt 1 started\n13:00:02 <script>alert(1)</script>\n",
        data_snapshot={"train_rows": 200, "val_rows": 50, "max_comparison_id": 250},
    )
    reward_out = ModelVersion.objects.create(
        project=project,
        kind=ModelKind.REWARD,
        name="reward-run-A",
        path=str(tmp_path),
        parent=sft,
        run=reward_run,
        metrics={"reward/accuracy": 0.68, "evaluation": reward_run.summary["evaluation"]},
    )
    reward_run.output_version = reward_out
    reward_run.save()
    ppo_run = TrainingRun.objects.create(
        project=project,
        kind=RunKind.PPO,
        status=RunStatus.SUCCEEDED,
        policy=sft,
        reference=sft,
        reward_model=rm1,
        config={"learning_rate": 1e-6},
        progress_step=2,
        progress_total=2,
        started_at=now - timedelta(minutes=4),
        finished_at=now - timedelta(minutes=1),
        metrics={
            key: [[1, a], [2, b]]
            for key, a, b in (
                ("ppo/reward", 0.1, 0.3),
                ("ppo/kl", 0.0, 0.8),
                ("ppo/entropy", 2.1, 2.0),
                ("ppo/clipfrac", 0.0, 0.12),
                ("ppo/approx_kl", 0.0, 0.01),
                ("ppo/value_loss", 1.5, 0.9),
            )
        },
        summary={
            "metrics": {"ppo/reward": 0.3, "ppo/kl": 0.8},
            "evaluation": {
                "prompts": 3,
                "candidate_reward": 0.42,
                "baseline_reward": 0.12,
                "kl": 0.8,
                "max_kl": 10.0,
                "passed": True,
                "samples": SAMPLES,
            },
            "samples": [{"prompt": "Train prompt", "response": "rollout text", "reward": 1.25}],
        },
    )
    ppo_out = ModelVersion.objects.create(
        project=project,
        kind=ModelKind.POLICY,
        name="ppo-run-B",
        path=str(tmp_path),
        parent=sft,
        run=ppo_run,
        metrics={
            "ppo/reward": 0.3,
            "ppo/kl": 0.8,
            "evaluation": {"candidate_reward": 0.42, "baseline_reward": 0.12, "kl": 0.8, "passed": True},
        },
    )
    ppo_run.output_version = ppo_out
    ppo_run.save()
    project.models = {"sft": sft, "rm1": rm1, "reward_out": reward_out, "ppo_out": ppo_out}
    project.runs = {"reward": reward_run, "ppo": ppo_run}
    return project


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _text(html: str) -> str:
    return html_module.unescape(" ".join(re.sub(r"<[^>]+>", " ", html).split()))


def _htmx(client: Client, url: str, data: dict | None = None):
    return client.post(url, data or {}, HTTP_HX_REQUEST="true")


@pytest.mark.parametrize("role", [Role.ADMIN, Role.ML_ENGINEER])
def test_training_page_lists_models_and_runs(loop, make_user, role):
    now = timezone.now()
    running = TrainingRun.objects.create(
        project=loop,
        kind=RunKind.GENERATE,
        status=RunStatus.RUNNING,
        policy=loop.models["sft"],
        progress_step=10,
        progress_total=40,
        started_at=now - timedelta(seconds=60),
    )
    client = _client(make_user(role, username="viewer"))
    with mock.patch("rlhf.selectors.timezone.now", return_value=now):
        response = client.get(f"/manage/projects/{loop.pk}/training/")
    assert response.status_code == 200
    text = _text(response.content.decode())
    assert "Promoted policy sft" in text
    assert "Promoted reward model rm-1" in text
    assert "SFT reference sft" in text
    rows = {row["run"].pk: row for row in response.context["runs"]}
    assert rows[running.pk]["percent"] == 25
    # 60 s for 10 of 40 steps: 180 s to go
    assert rows[running.pk]["eta"] == 180.0  # 60 s for 10 of 40 steps
    assert "10/40 3 min 00 s" in text
    assert f"run {running.pk} Generate responses Running Started by hand" in text
    assert "10/40" in text
    candidates = [row["version"].name for row in response.context["candidates"]]
    assert candidates == ["ppo-run-B", "reward-run-A"]
    assert "reward-run-A Reward model Candidate sft" in text
    assert "accuracy 68.0% · passed" in text
    assert "held-out reward 0.420, KL 0.800 · passed" in text
    assert text.count("Promote ") >= 2
    page = response.content.decode()
    assert f'action="/manage/versions/{loop.models["reward_out"].pk}/promote/"' in page
    # the runs table polls while a run is active
    assert 'hx-trigger="every 2s, runs-changed from:body"' in page


def test_runs_partial_stops_polling_when_nothing_is_active(loop, admin_user):
    response = _client(admin_user).get(f"/manage/projects/{loop.pk}/training/runs/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'hx-trigger="runs-changed from:body"' in page
    assert "every 2s" not in page


def test_labelers_get_403_on_every_training_page(loop, labeler):
    client = _client(labeler)
    run = loop.runs["ppo"]
    for url in (
        "/manage/training/",
        f"/manage/projects/{loop.pk}/training/",
        f"/manage/projects/{loop.pk}/training/runs/",
        f"/manage/runs/{run.pk}/",
        f"/manage/runs/{run.pk}/live/",
        f"/manage/projects/{loop.pk}/compare/",
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Only admins or ml engineers use this page." in response.content.decode()
    for url, data in (
        (f"/manage/projects/{loop.pk}/training/start/", {"kind": "reward"}),
        (f"/manage/versions/{loop.models['reward_out'].pk}/promote/", {}),
        (f"/manage/projects/{loop.pk}/training/rollback/", {"kind": "policy"}),
        (f"/manage/runs/{run.pk}/cancel/", {}),
    ):
        assert client.post(url, data).status_code == 403, url
    assert TrainingRun.objects.count() == 2
    assert ModelVersion.objects.get(name="reward-run-A").state == ModelState.CANDIDATE


def test_navigation_links_to_the_training_pages(loop, ml_engineer):
    client = _client(ml_engineer)
    page = client.get("/manage/projects/").content.decode()
    assert '<a class="nav-link" href="/manage/training/">Training</a>' in page
    response = client.get("/manage/training/")
    assert response.status_code == 200
    text = _text(response.content.decode())
    assert f"Loop sft rm-1 0 run {loop.runs['ppo'].pk} · PPO · Succeeded" in text


def test_start_buttons_queue_a_run(loop, ml_engineer, django_capture_on_commit_callbacks):
    client = _client(ml_engineer)
    with (
        mock.patch("rlhf.services.runs._enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = _htmx(client, f"/manage/projects/{loop.pk}/training/start/", {"kind": "reward", "config": ""})
    assert response.status_code == 200
    run = TrainingRun.objects.get(status=RunStatus.QUEUED)
    enqueue.assert_called_once_with(run.pk)
    assert (run.kind, run.created_by, run.reference) == (RunKind.REWARD, ml_engineer, loop.models["sft"])
    assert response["HX-Trigger"] == "runs-changed"
    assert f"Train reward model queued as run {run.pk}. Follow run {run.pk}" in _text(response.content.decode())

    # without htmx: to the run's page
    with mock.patch("rlhf.services.runs._enqueue"), django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/manage/projects/{loop.pk}/training/start/", {"kind": "generate", "config": '{"temperature": 0.7}'}
        )
    generate = TrainingRun.objects.get(kind=RunKind.GENERATE)
    assert response.status_code == 302
    assert response["Location"] == f"/manage/runs/{generate.pk}/"
    assert generate.config["temperature"] == 0.7


def test_start_shows_the_409_message_when_a_run_is_active(loop, admin_user):
    active = TrainingRun.objects.create(project=loop, kind=RunKind.REWARD, status=RunStatus.RUNNING)
    client = _client(admin_user)
    with mock.patch("rlhf.services.runs._enqueue") as enqueue:
        response = _htmx(client, f"/manage/projects/{loop.pk}/training/start/", {"kind": "reward"})
        assert response.status_code == 200
        assert f"A reward run is already running (run {active.pk})." in response.content.decode()
        assert "HX-Trigger" not in response
        response = client.post(f"/manage/projects/{loop.pk}/training/start/", {"kind": "reward"})
        assert response.status_code == 409
        assert f'<p class="error-text" role="alert">A reward run is already running (run {active.pk}).</p>' in (
            response.content.decode()
        )
    enqueue.assert_not_called()
    assert TrainingRun.objects.count() == 3


def test_start_shows_other_refusals_inline(loop, admin_user, tiny_models):
    client = _client(admin_user)
    url = f"/manage/projects/{loop.pk}/training/start/"
    with mock.patch("rlhf.services.runs._enqueue") as enqueue:
        response = _htmx(client, url, {"kind": "reward", "config": '{"bogus": 1}'})
        assert "config.bogus: unknown field for RewardModelConfig" in response.content.decode()
        # under the config box, from the error's field (config.bogus), not next to the buttons
        assert (response.context["config_error"][:49], response.context["error"]) == (
            "config.bogus: unknown field for RewardModelConfig",
            "",
        )
        assert 'aria-describedby="run-start-config-error">{&quot;bogus&quot;: 1}</textarea>' in (
            response.content.decode()  # kept to fix, not retyped
        )
        response = _htmx(client, url, {"kind": "reward", "config": "{oops"})
        assert "config: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)." in (
            response.content.decode()
        )
        other = ProjectFactory(name="Empty")
        model_version_register(
            project=other,
            kind=ModelKind.POLICY,
            name="sft",
            path=tiny_models["policy"],
            is_reference=True,
            promote=True,
            actor=None,
        )
        response = _htmx(client, f"/manage/projects/{other.pk}/training/start/", {"kind": "ppo"})
        assert "PPO needs a promoted reward model; train and promote one first." in response.content.decode()
        assert (response.context["error"][:9], response.context["config_error"]) == ("PPO needs", "")
    enqueue.assert_not_called()


def test_promote_and_roll_back(loop, ml_engineer):
    client = _client(ml_engineer)
    rm1, new = loop.models["rm1"], loop.models["reward_out"]
    response = client.post(f"/manage/versions/{new.pk}/promote/")
    assert response.status_code == 302
    assert response["Location"] == f"/manage/projects/{loop.pk}/training/"
    new.refresh_from_db()
    rm1.refresh_from_db()
    assert (new.state, rm1.state) == (ModelState.PROMOTED, ModelState.ARCHIVED)
    page = _text(client.get(response["Location"]).content.decode())
    assert "reward-run-A is now the promoted reward model." in page
    assert "Promoted reward model reward-run-A" in page

    response = client.post(f"/manage/projects/{loop.pk}/training/rollback/", {"kind": "reward"}, follow=True)
    new.refresh_from_db()
    rm1.refresh_from_db()
    assert (new.state, rm1.state) == (ModelState.ARCHIVED, ModelState.PROMOTED)
    assert "Rolled back: rm-1 is the promoted reward model again." in _text(response.content.decode())

    response = client.post(f"/manage/projects/{loop.pk}/training/rollback/", {"kind": "policy"}, follow=True)
    assert "There is no earlier promoted policy model to roll back to." in _text(response.content.decode())
    loop.models["sft"].refresh_from_db()
    assert loop.models["sft"].state == ModelState.PROMOTED


def test_loop_settings_for_admins_only(loop, admin_user, ml_engineer):
    url = f"/manage/projects/{loop.pk}/training/settings/"
    data = {
        "auto_chain": "",
        "retrain_min_comparisons": "120",
        "reward_min_accuracy": "0.6",
        "ppo_max_kl": "4.5",
        "generate_prompts": "32",
        "max_response_tokens": "48",
        "sft_data_path": "",
        "reward_margin": "0.03",
        "human_eval": "on",
        "human_eval_prompts": "24",
        "human_eval_min_votes": "40",
        "human_eval_threshold": "0.55",
        "human_eval_timeout_hours": "48",
    }
    engineer_page = _client(ml_engineer).get(f"/manage/projects/{loop.pk}/training/").content.decode()
    assert "Admins change these." in engineer_page
    assert _client(ml_engineer).post(url, data).status_code == 403

    client = _client(admin_user)
    response = _htmx(client, url, data)
    assert response.status_code == 200
    assert "Loop settings saved." in response.content.decode()
    settings_row = LoopSettings.objects.get(project=loop)
    assert (
        settings_row.auto_chain,
        settings_row.retrain_min_comparisons,
        settings_row.reward_min_accuracy,
        settings_row.ppo_max_kl,
        settings_row.generate_prompts,
        settings_row.max_response_tokens,
        settings_row.sft_data_path,
    ) == (False, 120, 0.6, 4.5, 32, 48, "")
    assert (
        settings_row.reward_margin,
        settings_row.human_eval,
        settings_row.human_eval_prompts,
        settings_row.human_eval_min_votes,
        settings_row.human_eval_threshold,
        settings_row.human_eval_timeout_hours,
    ) == (0.03, True, 24, 40, 0.55, 48)

    response = client.post(url, {**data, "reward_min_accuracy": "1.5", "generate_prompts": "0"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Ensure this value is less than or equal to 1.0." in page
    assert "Ensure this value is greater than or equal to 1." in page
    assert LoopSettings.objects.get(project=loop).reward_min_accuracy == 0.6


def test_reward_run_detail(loop, ml_engineer):
    run = loop.runs["reward"]
    response = _client(ml_engineer).get(f"/manage/runs/{run.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    text = _text(page)
    assert [item["key"] for item in response.context["charts"]] == ["reward/loss", "reward/accuracy"]
    accuracy = response.context["charts"][1]["chart"]
    assert accuracy.reference[1] == "human agreement 72.6%"
    assert [p.text for p in accuracy.points] == ["68.0%"]
    assert "Loss reward/loss · last 0.5200" in text
    assert "Passed : the output may be promoted." in text
    assert "Held-out accuracy 68.0% ≥ the minimum 55.0%." in text
    assert (
        f"The promoted reward model (version {loop.models['rm1'].pk}) scores 64.0% on the same pairs: beaten." in text
    )
    assert "Human agreement on the held-out pairs: 72.6% (the ceiling)." in text
    assert "13:00:02 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
    assert "{\n  &quot;learning_rate&quot;: 1e-05,\n  &quot;num_epochs&quot;: 1\n}</pre>" in page
    assert "train_rows 200" in text and "max_comparison_id 250" in text
    assert "SFT reference sft SFT reference" in text
    assert 'hx-trigger="every 2s"' not in page
    assert "Cancel run" not in page


def test_ppo_run_detail_charts_evaluation_and_samples(loop, admin_user):
    run = loop.runs["ppo"]
    response = _client(admin_user).get(f"/manage/runs/{run.pk}/")
    assert response.status_code == 200
    assert [item["key"] for item in response.context["charts"]] == [
        "ppo/reward",
        "ppo/kl",
        "ppo/entropy",
        "ppo/clipfrac",
        "ppo/approx_kl",
        "ppo/value_loss",
    ]
    text = _text(response.content.decode())
    assert "Held-out reward 0.420 against 0.120 for the policy it started from (better; 3 prompts)." in text
    assert "KL to the reference 0.800 ≤ the limit 10.000." in text
    assert "1 Name a prime. 7 0.900 9 0.100" in text
    assert "2 user: Say hi Hi! 0.500 hello 0.300" in text
    assert "1 Train prompt rollout text 1.250" in text
    assert "Output: ppo-run-B (candidate) Promote" in text
    assert f"/manage/projects/{loop.pk}/compare/?a={loop.models['ppo_out'].pk}&amp;b={loop.models['sft'].pk}" in (
        response.content.decode()
    )


def test_live_partial_polls_until_the_run_finishes(loop, admin_user):
    now = timezone.now()
    run = TrainingRun.objects.create(
        project=loop,
        kind=RunKind.PPO,
        status=RunStatus.RUNNING,
        progress_step=5,
        progress_total=20,
        started_at=now - timedelta(seconds=100),
        metrics={"ppo/kl": [[1, 0.1], [5, 0.4]]},
    )
    client = _client(admin_user)
    url = f"/manage/runs/{run.pk}/live/"
    with mock.patch("rlhf.selectors.timezone.now", return_value=now):
        page = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert f'hx-get="{url}" hx-trigger="every 2s"' in page
    text = _text(page)
    assert "Running 25% step 5 of 20 (25%) ETA 5 min 00 s" in text
    assert "KL to the reference ppo/kl · last 0.4000" in text

    TrainingRun.objects.filter(pk=run.pk).update(
        status=RunStatus.SUCCEEDED, progress_step=20, finished_at=timezone.now()
    )
    page = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in page
    assert "every 2s" not in page
    assert "Succeeded 100% step 20 of 20 (100%)" in _text(page)


def test_cancel_a_run(loop, ml_engineer):
    run = TrainingRun.objects.create(project=loop, kind=RunKind.REWARD, status=RunStatus.QUEUED)
    client = _client(ml_engineer)
    detail = client.get(f"/manage/runs/{run.pk}/").content.decode()
    assert "Cancel run" in detail and 'hx-trigger="every 2s"' in detail
    response = _htmx(client, f"/manage/runs/{run.pk}/cancel/")
    assert response.status_code == 200
    run.refresh_from_db()
    assert (run.status, run.cancel_requested) == (RunStatus.CANCELLED, True)
    page = response.content.decode()
    assert f"Run {run.pk} cancelled." in page
    assert "every 2s" not in page

    response = _htmx(client, f"/manage/runs/{run.pk}/cancel/")
    assert f"Run {run.pk} already cancelled." in response.content.decode()

    running = TrainingRun.objects.create(project=loop, kind=RunKind.PPO, status=RunStatus.RUNNING)
    response = client.post(f"/manage/runs/{running.pk}/cancel/", follow=True)
    running.refresh_from_db()
    assert (running.status, running.cancel_requested) == (RunStatus.RUNNING, True)
    text = _text(response.content.decode())
    assert f"Cancel requested: run {running.pk} stops at its next progress report." in text
    assert "Cancel requested" in text


def test_compare_a_policy_with_the_one_it_started_from(loop, ml_engineer):
    a, b = loop.models["ppo_out"], loop.models["sft"]
    response = _client(ml_engineer).get(f"/manage/projects/{loop.pk}/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    samples = response.context["samples"]
    assert samples["source"] == "one_run"
    assert samples["win_rate"] == pytest.approx(2 / 3)
    assert samples["a_mean_reward"] == pytest.approx(1.6 / 3)
    assert samples["b_mean_reward"] == pytest.approx(0.8 / 3)
    text = _text(response.content.decode())
    assert "A held-out reward 0.420 its run's mean over every evaluation prompt" in text
    assert "B held-out reward 0.120 same prompts, seed and reward model" in text
    assert "A mean reward 0.533 on the rows below" in text
    assert "B mean reward 0.267 on the rows below" in text
    assert "A's win rate 66.7% over 3 prompts, ties count half" in text
    assert f"Both columns come from the evaluation of run {loop.runs['ppo'].pk}" in text
    assert "Name a prime. 7 0.900 9 0.100" in text
    assert "Held-out reward (its run's evaluation) 0.420 —" in text
    assert "KL to the reference 0.800 0 (it is the reference)" in text
    assert "Lineage ppo-run-B ← sft sft" in text

    # swapped: B's view of the same rows
    response = _client(ml_engineer).get(f"/manage/projects/{loop.pk}/compare/?a={b.pk}&b={a.pk}")
    assert response.context["samples"]["win_rate"] == pytest.approx(1 / 3)
    assert (response.context["samples"]["a_held_out_reward"], response.context["samples"]["b_held_out_reward"]) == (
        0.12,
        0.42,
    )
    assert "hello 0.300 Hi! 0.500" in _text(response.content.decode())


def test_compare_two_ppo_outputs_scored_by_one_reward_model(loop, admin_user, tmp_path):
    """Two PPO runs from the same start and reward model: rows matched by prompt across runs."""
    sft, rm1 = loop.models["sft"], loop.models["rm1"]
    other_run = TrainingRun.objects.create(
        project=loop,
        kind=RunKind.PPO,
        status=RunStatus.SUCCEEDED,
        policy=sft,
        reference=sft,
        reward_model=rm1,
        summary={
            "evaluation": {
                "candidate_reward": 0.3,
                "samples": [
                    {
                        "prompt": "2+2?",
                        "response": "4",
                        "reward": 0.6,
                        "baseline_response": "4",
                        "baseline_reward": 0.4,
                    },
                    {"prompt": "Unshared", "response": "x", "reward": 0.0},
                ],
            }
        },
    )
    other = ModelVersion.objects.create(
        project=loop, kind=ModelKind.POLICY, name="ppo-run-C", path=str(tmp_path), parent=sft, run=other_run
    )
    response = _client(admin_user).get(
        f"/manage/projects/{loop.pk}/compare/?a={other.pk}&b={loop.models['ppo_out'].pk}"
    )
    samples = response.context["samples"]
    assert (samples["source"], samples["comparable"], samples["scored"]) == ("two_runs", True, 1)
    assert samples["win_rate"] == 1.0
    assert (samples["a_held_out_reward"], samples["b_held_out_reward"]) == (0.3, 0.42)
    assert "2+2? 4 0.600 5 0.200" in _text(response.content.decode())


def test_compare_reward_models_and_bad_input(loop, ml_engineer, tiny_models):
    client = _client(ml_engineer)
    a, b = loop.models["reward_out"], loop.models["rm1"]
    response = client.get(f"/manage/projects/{loop.pk}/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    assert response.context["samples"] is None
    text = _text(response.content.decode())
    assert "Held-out accuracy 68.0% —" in text
    assert "Promoted model's accuracy then 64.0% —" in text

    picker = client.get(f"/manage/projects/{loop.pk}/compare/")
    assert picker.status_code == 200
    assert "Pick two versions." in picker.content.decode()

    response = client.get(f"/manage/projects/{loop.pk}/compare/?a=x&b={b.pk}")
    assert response.status_code == 400
    assert "a: expected a model version id, got 'x'." in _text(response.content.decode())

    elsewhere = ProjectFactory(name="Elsewhere")
    foreign = model_version_register(
        project=elsewhere, kind=ModelKind.POLICY, name="other", path=tiny_models["policy"], actor=None
    )
    response = client.get(f"/manage/projects/{loop.pk}/compare/?a={foreign.pk}&b={b.pk}")
    assert response.status_code == 404
    assert f"a: model version {foreign.pk} not found in project 'Loop'." in _text(response.content.decode())


def test_series_chart_fits_the_values_and_the_reference_line():
    from frontend.charts import HEIGHT, MAX_LINE_POINTS, TOP, series_chart

    chart = series_chart([[0, 0.5], [10, 0.7]], percent=True, reference=0.8, reference_label="human agreement")
    # the axis spans 0.5..0.8 plus 8% either side: 0.476..0.824 over the 174 px between the margins
    assert chart.points[0].y == round(TOP + (0.824 - 0.5) / 0.348 * (HEIGHT - 12 - 34), 1)
    assert chart.reference == (round(TOP + (0.824 - 0.8) / 0.348 * 174, 1), "human agreement 80.0%")
    assert [p.text for p in chart.points] == ["50.0%", "70.0%"]
    # whole steps where those steps are: 580 px for 10 steps
    assert chart.x_ticks == [
        (44.0, "0"),
        (160.0, "2"),
        (218.0, "3"),
        (334.0, "5"),
        (450.0, "7"),
        (508.0, "8"),
        (624.0, "10"),
    ]

    long = series_chart([[step, float(step)] for step in range(1, 1001)])
    assert len(long.points) == MAX_LINE_POINTS
    assert long.points[-1].value == 1000.0
    assert not long.show_dots
    assert series_chart([]).path == ""


def _evaluation_items(page: str) -> list[tuple[str, str]]:
    block = page.split('id="evaluation"', 1)[1].split("</div>", 1)[0]
    return [(cls, _text(body)) for cls, body in re.findall(r'<li class="([^"]*)">(.*?)</li>', block)]


def test_a_ppo_gate_without_required_improvement_shows_no_failed_check(loop, admin_user):
    """ppo_require_improvement off: a policy no better than its start passes on KL alone, and the page
    says so instead of a red 'not better' under 'Passed' (the stored shape of runs before records)."""
    LoopSettings.objects.filter(project=loop).update(ppo_require_improvement=False)
    run = loop.runs["ppo"]
    run.summary = {
        "metrics": {"ppo/kl": 0.8},
        "evaluation": {
            "prompts": 3,
            "candidate_reward": 0.1,
            "baseline_reward": 0.12,
            "kl": 0.8,
            "max_kl": 10.0,
            "passed": True,
        },
    }
    run.save(update_fields=["summary"])
    page = _client(admin_user).get(f"/manage/runs/{run.pk}/").content.decode()
    assert "Passed : the output may be promoted." in _text(page)
    assert _evaluation_items(page) == [
        (
            "",
            "Held-out reward 0.100 against 0.120 for the policy it started from (not better; 3 prompts); "
            "not required (ppo_require_improvement is off).",
        ),
        ("ok-text", "KL to the reference 0.800 ≤ the limit 10.000."),
    ]


def _trail(project) -> list[tuple]:
    return [
        (e.actor_name, e.action, e.target, e.reason, e.before, e.after)
        for e in AuditEntry.objects.filter(project=project).order_by("id")
    ]


def test_promote_and_roll_back_leave_one_audit_row_each_shown_on_the_page(loop, ml_engineer):
    client = _client(ml_engineer)
    rm1, new = loop.models["rm1"], loop.models["reward_out"]
    registered = _trail(loop)
    client.post(f"/manage/versions/{new.pk}/promote/")
    client.post(f"/manage/projects/{loop.pk}/training/rollback/", {"kind": "reward"})
    client.post(f"/manage/projects/{loop.pk}/training/rollback/", {"kind": "policy"})  # refused: no row
    assert _trail(loop)[len(registered) :] == [
        (
            "emil",
            "model.promote",
            f"rlhf.modelversion:{new.pk}",
            "",
            {"version": rm1.pk, "name": "rm-1"},
            {"version": new.pk, "name": "reward-run-A"},
        ),
        (
            "emil",
            "model.rollback",
            f"rlhf.modelversion:{rm1.pk}",
            "",
            {"version": new.pk, "name": "reward-run-A"},
            {"version": rm1.pk, "name": "rm-1"},
        ),
    ]
    page = client.get(f"/manage/projects/{loop.pk}/training/").content.decode()
    decisions = _text(page.split('id="model-decisions"', 1)[1].split("</section>", 1)[0])
    assert "emil Model rolled back reward:rm-1" in decisions
    assert "emil Model promoted reward:reward-run-A" in decisions
    assert "the loop Model promoted reward:rm-1 promoted when registered" in decisions
