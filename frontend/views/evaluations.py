"""Human-evaluation pages for admins and ML engineers: one evaluation with its verdict, figures and
answers side by side (it polls itself while votes arrive), the project's list with the form that
starts one (on the training page), and the leaderboard of every evaluated version."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotation import selectors as annotation_selectors
from annotation.models import Project
from frontend import charts
from frontend.forms import EvaluationStartForm
from frontend.views.common import role_required
from labelers.models import Role
from rlhf import selectors
from rlhf.models import Evaluation, EvaluationStatus, ModelKind, ModelState, ModelVersion, TrainingRun
from rlhf.records import EvaluationReport, SideBySide

EVALUATIONS_SHOWN = 20
POLL_SECONDS = 5


# --- shared pieces ----------------------------------------------------------------------------------


def evaluation_report_or_none(evaluation: Evaluation) -> EvaluationReport | None:
    """The report with its gate; None while the answers are being written, or for one that ended
    without votes (its run failed or was cancelled): there is nothing to count then."""
    if evaluation.status == EvaluationStatus.GENERATING:
        return None
    if not evaluation.is_open and "gate" not in (evaluation.verdict or {}):
        return None
    return selectors.evaluation_report(evaluation=evaluation)


def evaluation_reason(evaluation: Evaluation, report: EvaluationReport | None) -> str:
    """One sentence on where the evaluation stands: the gate's reason when there are votes to count."""
    if report is not None:
        return report.gate.reason
    if evaluation.status == EvaluationStatus.GENERATING:
        run = f" (run {evaluation.run_id})" if evaluation.run_id else ""
        return f"Writing the answers of both policies{run}; labelers vote once they are in."
    return str((evaluation.verdict or {}).get("reason", "")) or evaluation.get_status_display()


def evaluation_row(evaluation: Evaluation) -> dict[str, Any]:
    report = evaluation_report_or_none(evaluation)
    return {
        "evaluation": evaluation,
        "gate": report.gate if report is not None else None,
        "reason": evaluation_reason(evaluation, report),
    }


def _policy_choices(project: Project) -> tuple[list[tuple[int, str]], ModelVersion | None, ModelVersion | None]:
    """The project's policies as choices, the default candidate (the newest candidate) and the
    default baseline (the promoted policy, else the SFT reference)."""
    policies = list(selectors.model_version_list(project=project).filter(kind=ModelKind.POLICY))
    choices = [(v.pk, f"{v.name} ({v.get_state_display().lower()})") for v in policies]
    candidate = next((v for v in policies if v.state == ModelState.CANDIDATE), None)
    baseline = next((v for v in policies if v.state == ModelState.PROMOTED), None) or next(
        (v for v in policies if v.is_reference), None
    )
    return choices, candidate, baseline


def evaluation_start_form(project: Project, data: Any = None) -> EvaluationStartForm:
    choices, candidate, baseline = _policy_choices(project)
    initial = {"candidate": candidate.pk if candidate else None, "baseline": baseline.pk if baseline else None}
    return EvaluationStartForm(data, policies=choices, initial=initial, auto_id="evaluation-%s")


def evaluations_context(
    project: Project,
    *,
    form: EvaluationStartForm | None = None,
    notice: str = "",
    started: Evaluation | None = None,
) -> dict[str, Any]:
    """The training page's "Human evaluations" section: the newest evaluations and the start form."""
    evaluations = selectors.evaluation_list(project=project)[:EVALUATIONS_SHOWN]
    return {
        "project": project,
        "evaluation_rows": [evaluation_row(e) for e in evaluations],
        "evaluation_form": form if form is not None else evaluation_start_form(project),
        "evaluation_notice": notice,
        "evaluation_started": started,
    }


def run_evaluations(run: TrainingRun) -> dict[str, Any]:
    """For a run's page: the human evaluations a PPO run's promotion waits on, and the evaluation
    an evaluate run writes the answers of."""
    evaluations = selectors.evaluation_list(project=run.project)
    return {
        "human_evaluations": [evaluation_row(e) for e in evaluations.filter(gated_run=run)],
        "run_evaluation": evaluations.filter(run=run).first(),
    }


# --- one evaluation ---------------------------------------------------------------------------------


def _sample_rows(samples: list[SideBySide]) -> list[dict[str, Any]]:
    return [
        {"sample": s, "share": s.points / s.votes if s.votes else None, "number": index}
        for index, s in enumerate(samples, start=1)
    ]


def _live_context(evaluation: Evaluation) -> dict[str, Any]:
    report = evaluation_report_or_none(evaluation)
    gate = report.gate if report is not None else None
    return {
        "evaluation": evaluation,
        "project": evaluation.project,
        "report": report,
        "gate": gate,
        "reason": evaluation_reason(evaluation, report),
        "ci": gate.ci95 if gate is not None else None,
        "votes_percent": min(100, round(100 * gate.votes / gate.min_votes)) if gate and gate.min_votes else 0,
        "by_tag": report.by_tag if report is not None else [],
        "sample_rows": _sample_rows(report.samples) if report is not None else [],
        "poll_seconds": POLL_SECONDS,
    }


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def evaluation_detail(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
    context = {**_live_context(evaluation), "section": "training"}
    return render(request, "frontend/training/evaluation.html", context)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def evaluation_live(request: HttpRequest, evaluation_id: int) -> HttpResponse:
    """The verdict, figures and answers alone: the page polls it while the evaluation is open."""
    evaluation = selectors.evaluation_get(evaluation_id=evaluation_id)
    return render(request, "frontend/training/_evaluation_live.html", _live_context(evaluation))


# --- the leaderboard --------------------------------------------------------------------------------


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def leaderboard_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Every version human evaluations compared, by rating, with the intervals drawn."""
    project = annotation_selectors.project_get(project_id=project_id)
    rows = selectors.leaderboard(project=project)
    context = {
        "project": project,
        "section": "training",
        "rows": rows,
        "groups": len({row.group for row in rows}),
        "chart": charts.rating_chart([(row.name, row.rating, row.ci95) for row in rows]),
    }
    return render(request, "frontend/training/leaderboard.html", context)
