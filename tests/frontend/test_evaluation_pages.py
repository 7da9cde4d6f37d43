"""The human-evaluation pages through Django's test client. The evaluate run writes its answers
in-process with the tiny models; two labelers then vote as in tests/rlhf/test_evaluations.py.

The worked example: ``ppo-run-1`` (candidate) against ``sft`` (the promoted SFT reference) on two
held-out prompts, t1 (tag math) and t2 (tag geo), K=2, min_votes 4, threshold 25%. ann prefers the
candidate on both; ben on t1 and ties on t2. Four votes, 3.5 points: win rate 87.5%, Wilson 95%
interval over the two prompts 26.4% – 99.3%; math 2/2 (100.0%, 34.2% – 100.0%), geo 1.5/2 (75.0%, 19.8% – 97.3%)."""

from __future__ import annotations

import html as html_module
import re
from types import SimpleNamespace

import pytest
from django.test import Client

from frontend.charts import CHAR_WIDTH, rating_chart
from frontend.forms import LoopSettingsForm
from rlhf.models import Evaluation, EvaluationStatus, ModelKind, RunKind, RunStatus, TrainingRun
from rlhf.records import PPOGate
from rlhf.selectors import leaderboard
from rlhf.services.evaluations import evaluation_check, evaluation_start
from rlhf.services.loop import training_run_execute
from rlhf.services.registry import model_version_register
from rlhf.training.stats import bradley_terry
from tests.rlhf.test_evaluations import _for_candidate, _label, _project

pytestmark = pytest.mark.django_db

REASON = (
    "Passed: 4 votes from 2 labelers (at least 4 needed). Win rate of 'ppo-run-1' over 'sft' 87.5% "
    "(95% CI 26.4% – 99.3% over 2 prompts, ties count half): the lower bound is above 25.0%."
)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _text(html: str) -> str:
    return html_module.unescape(" ".join(re.sub(r"<[^>]+>", " ", html).split()))


def _block(page: str, element_id: str, end: str) -> str:
    return page.split(f'id="{element_id}"', 1)[1].split(end, 1)[0]


def _rows(page: str, table_id: str) -> list[str]:
    body = _block(page, table_id, "</table>").split("<tbody>", 1)[1]
    return [_text(row) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)]


def _ben(candidate_id: int):
    """ben prefers the candidate on t1 and ties on t2."""

    def prefer(response_set, versions):
        outcome = "tie" if response_set.prompt.external_id == "t2" else "candidate"
        return _for_candidate(candidate_id, outcome)(response_set, versions)

    return prefer


@pytest.fixture
def evaluated(tiny_models, ml_engineer):
    project, sft, candidate = _project(tiny_models, min_votes=4, threshold=0.25)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=ml_engineer, enqueue=False)
    run = training_run_execute(run_id=evaluation.run_id)
    assert run.status == RunStatus.SUCCEEDED, run.error
    _label(project, "ann", _for_candidate(candidate.pk, "candidate"))
    _label(project, "ben", _ben(candidate.pk))
    evaluation.refresh_from_db()
    assert evaluation.status == EvaluationStatus.COLLECTING
    return SimpleNamespace(project=project, sft=sft, candidate=candidate, evaluation=evaluation, run=run)


def test_the_evaluation_page_shows_the_figures_and_polls_until_decided(evaluated, ml_engineer):
    client, evaluation = _client(ml_engineer), evaluated.evaluation
    url = f"/manage/evaluations/{evaluation.pk}/"
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    text = _text(page)
    assert "Human evaluation" in text and f"{evaluation.pk}: ppo-run-1 against sft" in text
    assert _text(_block(page, "evaluation-status", "</span>").split(">", 1)[1]) == "Collecting votes"
    assert _text(_block(page, "evaluation-win-rate", "</b>").split(">", 1)[1]) == "87.5%"
    assert _text(_block(page, "evaluation-ci", "</span>").split(">", 1)[1]) == "95% CI 26.4% – 99.3%"
    assert _text(_block(page, "evaluation-progress", "</span>").split(">", 1)[1]) == (
        "4 of 4 votes (100%) from 2 labelers"
    )
    assert '<progress max="4" value="4"' in page
    assert "deadline " in _text(_block(page, "evaluation-deadline", "</span>"))
    assert _text(_block(page, "evaluation-reason", "</p>").split(">", 1)[1]) == REASON
    checks = re.findall(r'<li class="([^"]*)">(.*?)</li>', _block(page, "evaluation", "</div>"))
    assert [(cls, _text(body)) for cls, body in checks] == [
        ("ok-text", "4 votes from 2 labelers (at least 4 needed)."),
        (
            "ok-text",
            "Win rate of 'ppo-run-1' over 'sft' 87.5% (95% CI 26.4% – 99.3% over 2 prompts, ties count half): "
            "the lower bound is above 25.0%.",
        ),
    ]
    assert _rows(page, "evaluation-tags") == ["geo 2 75.0% 19.8% – 97.3%", "math 2 100.0% 34.2% – 100.0%"]
    # One answer of each policy per item, as the evaluate run wrote them; votes, the candidate's share.
    answers = {
        rs.prompt.text: dict(rs.responses.values_list("model_version_id", "text"))
        for rs in evaluation.response_sets.select_related("prompt")
    }
    share = {"What is 2 plus 6?": "2 100.0%", "Name the capital of France.": "2 75.0%"}
    expected = [
        _text(html_module.escape(f"{prompt} {by[evaluated.candidate.pk]} {by[evaluated.sft.pk]} {share[prompt]}"))
        for prompt, by in answers.items()
    ]
    assert sorted(row.split(" ", 1)[1] for row in _rows(page, "evaluation-samples")) == sorted(expected)
    # Links: the run that wrote the answers; started by hand, it gates no PPO run.
    assert f'<a href="/manage/runs/{evaluated.run.pk}/">run {evaluated.run.pk}</a>' in page
    assert f"Started by emil {evaluation.created_at:%Y-%m-%d %H:%M:%S}" in text
    assert "no PPO run waits on it: its verdict promotes nothing" in text
    # Open: the figures poll themselves.
    assert f'hx-get="/manage/evaluations/{evaluation.pk}/live/" hx-trigger="every 5s"' in page
    live = client.get(f"/manage/evaluations/{evaluation.pk}/live/", HTTP_HX_REQUEST="true").content.decode()
    assert live.startswith('\n<div id="evaluation-live" hx-get=') and "<html" not in live

    # Decided: the stored verdict, the same figures, no more polling.
    assert evaluation_check(evaluation=evaluation).status == EvaluationStatus.PASSED
    for decided in (client.get(url).content.decode(), client.get(f"{url}live/").content.decode()):
        assert "hx-trigger" not in decided and "every 5s" not in decided
        assert _text(_block(decided, "evaluation-status", "</span>").split(">", 1)[1]) == "Passed"
        assert _text(_block(decided, "evaluation-reason", "</p>").split(">", 1)[1]) == REASON
        assert _text(_block(decided, "evaluation-ci", "</span>").split(">", 1)[1]) == "95% CI 26.4% – 99.3%"
        assert 'class="evaluation passed"' in decided


def test_a_waiting_evaluation_shows_its_pending_checks(tiny_models, admin_user):
    project, _, candidate = _project(tiny_models, min_votes=10, overlap=5)
    evaluation = evaluation_start(project=project, candidate=candidate, actor=None, enqueue=False)
    page = _client(admin_user).get(f"/manage/evaluations/{evaluation.pk}/").content.decode()
    assert _text(_block(page, "evaluation-reason", "</p>").split(">", 1)[1]) == (
        f"Writing the answers of both policies (run {evaluation.run_id}); labelers vote once they are in."
    )
    assert "Started by" not in page  # by hand, by someone no longer known: no name to show
    assert "the deadline starts when the answers are written (72 hours)" in _text(page)
    training_run_execute(run_id=evaluation.run_id)
    _label(project, "ann", _for_candidate(candidate.pk, "baseline"))
    page = _client(admin_user).get(f"/manage/evaluations/{evaluation.pk}/").content.decode()
    checks = re.findall(r'<li class="([^"]*)">(.*?)</li>', _block(page, "evaluation", "</div>"))
    # Waiting: neither check decides yet, so neither is marked passed or failed.
    assert [(cls, _text(body)) for cls, body in checks] == [
        ("", "2 of the 10 votes needed so far (1 labeler)."),
        (
            "",
            "Win rate of 'ppo-run-1' over 'sft' 0.0% (95% CI 0.0% – 65.8% over 2 prompts, ties count half): "
            "the lower bound is not above 25.0%.",
        ),
    ]
    assert _text(_block(page, "evaluation-progress", "</span>").split(">", 1)[1]) == (
        "2 of 10 votes (20%) from 1 labeler"
    )
    assert 'hx-trigger="every 5s"' in page


def test_the_training_page_lists_evaluations_and_starts_one(evaluated, ml_engineer, tiny_models):
    client, project = _client(ml_engineer), evaluated.project
    page = client.get(f"/manage/projects/{project.pk}/training/").content.decode()
    evaluation = evaluated.evaluation
    assert _rows(page, "evaluation-table") == [
        f"evaluation {evaluation.pk} Collecting votes ppo-run-1 against sft 87.5% 26.4% – 99.3% 4 / 4 "
        f"{evaluation.created_at:%Y-%m-%d %H:%M} started by hand"
    ]
    assert f'<a href="/manage/evaluations/{evaluation.pk}/">evaluation {evaluation.pk}</a>' in page
    assert f'<a href="/manage/projects/{project.pk}/leaderboard/">Leaderboard</a>' in page
    form = _block(page, "evaluation-start", "</form>")
    # The candidate defaults to the newest candidate policy, the baseline to the promoted one.
    assert f'<option value="{evaluated.candidate.pk}" selected>ppo-run-1 (candidate)</option>' in form
    assert f'<option value="{evaluated.sft.pk}" selected>sft (promoted)</option>' in form

    url = f"/manage/projects/{project.pk}/evaluations/start/"
    same = {"candidate": evaluated.sft.pk, "baseline": evaluated.sft.pk}
    response = client.post(url, same)
    assert response.status_code == 400
    baseline_field = _block(response.content.decode(), "evaluation-start", "</form>").split(
        '<label for="evaluation-baseline">', 1
    )[1]
    baseline_field = baseline_field.split("</p>", 1)[0]
    assert 'aria-invalid="true"' in baseline_field
    assert _text(_block(baseline_field, "evaluation-baseline_error", "</span>").split(">", 1)[1]) == (
        "the candidate is the baseline; compare two different policies."
    )
    assert "evaluation-candidate_error" not in response.content.decode()
    # With htmx the section comes back (200: htmx swaps no 4xx) with the same error by the field.
    htmx = client.post(url, same, HTTP_HX_REQUEST="true")
    assert htmx.status_code == 200 and "<html" not in htmx.content.decode()
    assert _text(_block(htmx.content.decode(), "evaluation-baseline_error", "</span>").split(">", 1)[1]) == (
        "the candidate is the baseline; compare two different policies."
    )
    # The same pair again while the first is open: a 409 above the form, about no one field.
    again = client.post(url, {"candidate": evaluated.candidate.pk, "baseline": evaluated.sft.pk})
    assert again.status_code == 409
    assert f"Evaluation {evaluation.pk} of these two policies is still collecting votes." in _text(
        _block(again.content.decode(), "evaluation-start", "</form>")
    )
    assert Evaluation.objects.count() == 1

    other = model_version_register(
        project=project, kind=ModelKind.POLICY, name="ppo-run-2", path=tiny_models["policy"], actor=None
    )
    started = client.post(url, {"candidate": other.pk, "baseline": evaluated.sft.pk}, HTTP_HX_REQUEST="true")
    assert started.status_code == 200 and started["HX-Trigger"] == "runs-changed"
    new = Evaluation.objects.get(candidate=other)
    assert (new.baseline_id, new.status, new.created_by_id) == (evaluated.sft.pk, "generating", ml_engineer.pk)
    assert f"Evaluation {new.pk} started: 'ppo-run-2' against 'sft'." in _text(started.content.decode())
    assert TrainingRun.objects.get(pk=new.run_id).kind == RunKind.EVALUATE
    # One evaluate run at a time: the next start waits until this one has ended.
    TrainingRun.objects.filter(pk=new.run_id).update(status=RunStatus.CANCELLED)
    third = model_version_register(
        project=project, kind=ModelKind.POLICY, name="ppo-run-3", path=tiny_models["policy"], actor=None
    )
    plain = client.post(url, {"candidate": third.pk, "baseline": evaluated.sft.pk})
    assert plain.status_code == 302
    assert plain["Location"] == f"/manage/evaluations/{Evaluation.objects.get(candidate=third).pk}/"


def test_run_pages_link_their_evaluations(evaluated, admin_user):
    project, evaluation = evaluated.project, evaluated.evaluation
    gate = PPOGate.decide(candidate_reward=0.4, baseline_reward=0.1, kl=0.2, max_kl=10.0, require_improvement=True)
    ppo = TrainingRun.objects.create(
        project=project,
        kind=RunKind.PPO,
        status=RunStatus.SUCCEEDED,
        policy=evaluated.sft,
        reference=evaluated.sft,
        output_version=evaluated.candidate,
        summary={"version": 1, "metrics": {}, "evaluation": gate.to_json()},
    )
    Evaluation.objects.filter(pk=evaluation.pk).update(gated_run=ppo)
    client = _client(admin_user)
    page = client.get(f"/manage/runs/{ppo.pk}/").content.decode()
    # The automatic gate, then the human evaluation its promotion waits on.
    assert page.index('id="evaluation"') < page.index('id="human-evaluations"')
    block = _text(_block(page, "human-evaluations", "</ul>"))
    assert block == f"> Evaluation {evaluation.pk} : ppo-run-1 against sft Collecting votes {REASON}"
    assert f'<a href="/manage/evaluations/{evaluation.pk}/">Evaluation {evaluation.pk}</a>' in page
    detail = client.get(f"/manage/evaluations/{evaluation.pk}/").content.decode()
    assert f'<a href="/manage/runs/{ppo.pk}/">PPO run {ppo.pk}</a>' in detail

    run_page = client.get(f"/manage/runs/{evaluated.run.pk}/").content.decode()
    assert f'<a href="/manage/evaluations/{evaluation.pk}/">human evaluation {evaluation.pk}</a>' in run_page
    assert "Candidate policy ppo-run-1" in _text(_block(run_page, "run-inputs", "</table>"))
    assert "Baseline policy sft" in _text(_block(run_page, "run-inputs", "</table>"))
    assert "No metrics reported yet." not in run_page
    # A PPO run without a human evaluation shows none.
    ppo_alone = TrainingRun.objects.create(project=project, kind=RunKind.PPO, status=RunStatus.SUCCEEDED)
    assert 'id="human-evaluations"' not in client.get(f"/manage/runs/{ppo_alone.pk}/").content.decode()


def test_the_leaderboard_page_ranks_by_rating_with_one_error_bar_per_row(evaluated, ml_engineer):
    project, candidate, sft = evaluated.project, evaluated.candidate, evaluated.sft
    response = _client(ml_engineer).get(f"/manage/projects/{project.pk}/leaderboard/")
    assert response.status_code == 200
    page = response.content.decode()
    # 4 votes: 3.5 points to the candidate, 0.5 to sft.
    expected = bradley_terry([(str(candidate.pk), str(sft.pk), 1.0)] * 3 + [(str(candidate.pk), str(sft.pk), 0.5)])
    board = leaderboard(project=project)
    assert [row.name for row in board] == ["ppo-run-1", "sft"]
    rows = _rows(page, "leaderboard")
    assert rows == [
        f"{rank} {row.name} {row.state.capitalize()} {expected[str(row.version_id)]:.0f} "
        f"{row.ci95[0]:.0f} – {row.ci95[1]:.0f} 4 {row.points / 4 * 100:.1f}%"
        for rank, row in enumerate(board, start=1)
    ]
    assert rows[0].endswith(" 4 87.5%") and rows[1].endswith(" 4 12.5%")
    svg = _block(page, "leaderboard-chart", "</svg>")
    assert svg.count('<line class="errbar"') == len(board) == 2
    names = re.findall(r'<text class="tick name"[^>]*>([^<]*)</text>', svg)
    assert names == ["ppo-run-1", "sft"]  # best first, top down
    assert '<text class="axis-title"' in svg and "Rating (Elo scale)" in svg
    assert f'href="/api/v1/projects/{project.pk}/leaderboard.csv"' in page


def test_the_leaderboard_of_a_project_without_votes_says_so(project, admin_user):
    page = _client(admin_user).get(f"/manage/projects/{project.pk}/leaderboard/").content.decode()
    assert 'id="leaderboard-empty"' in page and "<svg" not in page


def test_rating_chart_fits_intervals_names_and_ticks():
    chart = rating_chart(
        [
            ("a-policy-with-a-very-long-name-indeed", 1100.0, (1040.0, 1180.0)),
            ("sft", 1000.0, (950.0, 1050.0)),
            ("no-interval", 900.0, None),
        ]
    )
    assert [bar.label for bar in chart.bars] == ["a-policy-with-a-very-long-n…", "sft", "no-interval"]
    # The axis runs over every interval end and the mean (900 .. 1180), out to whole ticks of 100.
    assert [label for _, label in chart.x_ticks] == ["900", "1000", "1100", "1200"]
    assert (chart.x_ticks[0][0], chart.x_ticks[-1][0]) == (chart.left, chart.right)
    long_bar, sft_bar, bare = chart.bars
    assert long_bar.low < long_bar.x < long_bar.high and sft_bar.x == chart.reference[0]
    assert bare.low == bare.x == bare.high == chart.left
    assert [bar.y for bar in chart.bars] == sorted(bar.y for bar in chart.bars)
    # Nothing drawn outside the picture: the longest name fits left of the plot, the last tick label
    # (4 characters, centred) right of it, the axis title below the ticks.
    assert chart.label_x - len(long_bar.label) * CHAR_WIDTH >= 0
    assert chart.right + 2 * CHAR_WIDTH <= chart.width
    assert chart.tick_y < chart.title_y < chart.height
    assert chart.bars[-1].cap_bottom < chart.bottom


def test_labelers_get_403_on_the_evaluation_pages(evaluated, labeler):
    client, project, evaluation = _client(labeler), evaluated.project, evaluated.evaluation
    for url in (
        f"/manage/evaluations/{evaluation.pk}/",
        f"/manage/evaluations/{evaluation.pk}/live/",
        f"/manage/projects/{project.pk}/leaderboard/",
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "Only admins or ml engineers use this page." in response.content.decode()
    start = client.post(
        f"/manage/projects/{project.pk}/evaluations/start/",
        {"candidate": evaluated.candidate.pk, "baseline": evaluated.sft.pk},
    )
    assert start.status_code == 403
    assert Evaluation.objects.count() == 1


def test_loop_settings_show_the_human_evaluation_fields_grouped(project, admin_user, ml_engineer):
    form = LoopSettingsForm()
    grouped = [name for _, names in LoopSettingsForm.GROUPS for name in names]
    assert sorted(grouped) == sorted(form.fields) and len(grouped) == len(set(grouped))
    assert (form.fields["human_eval_threshold"].min_value, form.fields["human_eval_threshold"].max_value) == (0, 1)
    assert form.fields["human_eval_timeout_hours"].max_value == 24 * 365
    page = _client(admin_user).get(f"/manage/projects/{project.pk}/training/").content.decode()
    human = _block(page, "loop-settings", "</section>").split("<legend>Human evaluation</legend>", 1)[1]
    human = human.split("</fieldset>", 1)[0]
    assert re.findall(r'name="([a-z_]+)"', human) == [
        "human_eval",
        "human_eval_prompts",
        "human_eval_min_votes",
        "human_eval_threshold",
        "human_eval_timeout_hours",
    ]
    assert 'name="human_eval_threshold" value="0.5" min="0.0" max="1.0" step="any" required' in human
    assert "The lower bound of the candidate&#x27;s win rate (95% Wilson) must be above this." in human
    reward = page.split("<legend>Reward model gate</legend>", 1)[1].split("</fieldset>", 1)[0]
    assert 'name="reward_margin" value="0.02"' in reward and "McNemar, p &lt; 0.05" in reward

    url = f"/manage/projects/{project.pk}/training/settings/"
    bad = _client(admin_user).post(url, {"human_eval_threshold": "1.5", "human_eval_min_votes": "0"})
    assert bad.status_code == 400
    assert "Ensure this value is less than or equal to 1.0." in bad.content.decode()
    assert "Ensure this value is greater than or equal to 1." in bad.content.decode()

    engineer = _text(_client(ml_engineer).get(f"/manage/projects/{project.pk}/training/").content.decode())
    assert "Human evaluation Human evaluation before a PPO policy is promoted no Prompts per human evaluation 32" in (
        engineer
    )
    assert "Votes before it decides 30" in engineer and "Waits for votes (hours) 72" in engineer
