"""Training pages for admins and ML engineers: a project's models and runs with the buttons that
start, promote and roll back; one run with live progress, metric charts, its evaluation and sample
table; two versions side by side. Both roles act here, as in the API; only admins edit the loop
settings."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation import selectors as annotation_selectors
from annotation.models import Project
from annotation.params import parse_id
from config import jsonsafe
from config.exceptions import ApplicationError, NotFound
from frontend import charts
from frontend.forms import LoopSettingsForm
from frontend.views import evaluations
from frontend.views.common import current_user, is_admin, is_htmx, role_required
from labelers.models import Role
from rlhf import selectors
from rlhf.models import Evaluation, LoopSettings, ModelKind, ModelState, ModelVersion, RunKind, TrainingRun
from rlhf.records import (
    ModelMetrics,
    PPOGate,
    RewardGate,
    RunSummary,
    as_number,
    last_value,
    number,
    percent,
    prompt_text,
)
from rlhf.services import loop_settings as loop_settings_services
from rlhf.services import registry, runs
from rlhf.services.evaluations import evaluation_start

RUNS_SHOWN = 50
START_BUTTONS = (
    (RunKind.REWARD, "Retrain reward model"),
    (RunKind.PPO, "Run PPO"),
    (RunKind.GENERATE, "Generate next batch"),
)
# (metric key, chart title, drawn as a percentage)
REWARD_CHARTS = (("reward/loss", "Loss", False), ("reward/accuracy", "Held-out accuracy", True))
PPO_CHARTS = (
    ("ppo/reward", "Reward", False),
    ("ppo/kl", "KL to the reference", False),
    ("ppo/entropy", "Entropy", False),
    ("ppo/clipfrac", "Clip fraction", True),
    ("ppo/approx_kl", "Approximate KL (policy update)", False),
    ("ppo/value_loss", "Value loss", False),
)
SNAPSHOT_IDS_SHOWN = 12


# --- shared pieces ----------------------------------------------------------------------------------


def _version_figure(version: ModelVersion) -> str:
    """The one number that says how good a version was when it was made."""
    metrics = ModelMetrics.from_json(version.kind, version.metrics)
    if version.kind == ModelKind.REWARD:
        return f"accuracy {percent(metrics.accuracy)}" if metrics.accuracy is not None else ""
    parts = []
    if isinstance(metrics.gate, PPOGate) and metrics.gate.candidate_reward is not None:
        parts.append(f"held-out reward {number(metrics.gate.candidate_reward)}")
    if metrics.kl is not None:
        parts.append(f"KL {number(metrics.kl)}")
    return ", ".join(parts)


def _version_row(version: ModelVersion, promoted: dict[str, ModelVersion]) -> dict[str, Any]:
    current = promoted.get(version.kind)
    return {
        "version": version,
        "figure": _version_figure(version),
        "passed": ModelMetrics.from_json(version.kind, version.metrics).passed,
        "compare_with": current if current is not None and current.pk != version.pk else None,
    }


def _run_row(run: TrainingRun) -> dict[str, Any]:
    total = run.progress_total
    return {
        "run": run,
        "percent": round(100 * run.progress_step / total) if total else (100 if run.status == "succeeded" else 0),
        "eta": selectors.training_run_eta_seconds(run=run),
    }


def _runs_context(project: Project) -> dict[str, Any]:
    runs = [_run_row(run) for run in selectors.training_run_list(project=project)[:RUNS_SHOWN]]
    return {"project": project, "runs": runs, "any_active": any(not row["run"].is_finished for row in runs)}


def _settings_form(loop: LoopSettings, data: Any = None) -> LoopSettingsForm:
    return LoopSettingsForm(data, initial={name: getattr(loop, name) for name in LoopSettingsForm.base_fields})


def _training_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    versions = list(selectors.model_version_list(project=project))
    promoted = {v.kind: v for v in versions if v.state == ModelState.PROMOTED}
    loop = loop_settings_services.loop_settings_get(project=project)
    return {
        **_runs_context(project),
        "section": "training",
        "promoted_policy": promoted.get(ModelKind.POLICY),
        "promoted_reward": promoted.get(ModelKind.REWARD),
        "references": [v for v in versions if v.is_reference],
        "promoted_rows": [_version_row(v, promoted) for v in versions if v.state == ModelState.PROMOTED],
        "candidates": [_version_row(v, promoted) for v in versions if v.state == ModelState.CANDIDATE],
        "archived": [_version_row(v, promoted) for v in versions if v.state == ModelState.ARCHIVED],
        "start_buttons": START_BUTTONS,
        "loop": loop,
        "settings_form": _settings_form(loop),
        "can_edit_settings": is_admin(request),
        **evaluations.evaluations_context(project),
    }


# --- the project's training page -------------------------------------------------------------------


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def training_index(request: HttpRequest) -> HttpResponse:
    """Every project with its promoted models and its newest run."""
    rows = []
    for project in annotation_selectors.project_list():
        promoted = {v.kind: v for v in selectors.model_version_list(project=project).filter(state=ModelState.PROMOTED)}
        rows.append(
            {
                "project": project,
                "policy": promoted.get(ModelKind.POLICY),
                "reward": promoted.get(ModelKind.REWARD),
                "active": selectors.training_runs_active(project=project).count(),
                "last_run": selectors.training_run_list(project=project).first(),
            }
        )
    return render(request, "frontend/training/index.html", {"rows": rows, "section": "training"})


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def training_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = annotation_selectors.project_get(project_id=project_id)
    return render(request, "frontend/training/page.html", _training_context(request, project))


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def training_runs(request: HttpRequest, project_id: int) -> HttpResponse:
    """The runs table alone: the page polls it while a run is queued or running."""
    project = annotation_selectors.project_get(project_id=project_id)
    return render(request, "frontend/training/_runs.html", _runs_context(project))


def _config_overrides(raw: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = jsonsafe.loads(raw)
    except ValueError as exc:
        raise ApplicationError(f"not valid JSON ({exc}).", code="invalid_config", field="config") from None
    if not isinstance(value, dict):
        raise ApplicationError("must be a JSON object.", code="invalid_config", field="config")
    return value


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def training_start(request: HttpRequest, project_id: int) -> HttpResponse:
    """Queue a generation, reward-model or PPO run; a refusal (one already active, no reward model,
    a bad config field) shows next to the buttons."""
    project = annotation_selectors.project_get(project_id=project_id)
    kind = request.POST.get("kind", "")
    config_text = request.POST.get("config", "")
    run: TrainingRun | None = None
    error, config_error, status = "", "", 200
    try:
        run = runs.training_run_start(
            project=project, kind=kind, config=_config_overrides(config_text), created_by=current_user(request)
        )
    except ApplicationError as exc:
        status = exc.status
        # An error about the config (or one of its keys) goes under the config box, whole: the key
        # it names is part of the message; the rest next to the buttons.
        if any(field == "config" or field.startswith("config.") for field in exc.field_messages()):
            config_error = exc.message
        else:
            error = exc.message
    notice = f"{RunKind(run.kind).label} queued as run {run.pk}." if run is not None else ""
    if is_htmx(request):
        context = {
            "project": project,
            "start_buttons": START_BUTTONS,
            "notice": notice,
            "error": error,
            "config_error": config_error,
            "started": run,
            "config_text": config_text if error or config_error else "",
        }
        response = render(request, "frontend/training/_start.html", context)
        if run is not None:
            response["HX-Trigger"] = "runs-changed"
        return response
    if run is not None:
        messages.success(request, notice)
        return redirect("frontend:run_detail", run_id=run.pk)
    context = {
        **_training_context(request, project),
        "error": error,
        "config_error": config_error,
        "config_text": config_text,
    }
    return render(request, "frontend/training/page.html", context, status=status)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def model_promote(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.model_version_get(version_id=version_id)
    if version.project_id is None:
        raise NotFound(f"Model version {version_id} belongs to no project.")
    version = registry.model_version_promote(version=version, actor=current_user(request))
    messages.success(request, f"{version.name} is now the promoted {ModelKind(version.kind).label.lower()}.")
    return redirect("frontend:training_page", project_id=version.project_id)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def model_rollback(request: HttpRequest, project_id: int) -> HttpResponse:
    project = annotation_selectors.project_get(project_id=project_id)
    kind = request.POST.get("kind", "")
    if kind not in ModelKind.values:
        raise ApplicationError(f"kind: must be one of {', '.join(ModelKind.values)}.", code="invalid")
    try:
        version = registry.model_version_rollback(project=project, kind=kind, actor=current_user(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolled back: {version.name} is the promoted {ModelKind(kind).label.lower()} again.")
    return redirect("frontend:training_page", project_id=project.pk)


@role_required(Role.ADMIN)
@require_POST
def loop_settings_update(request: HttpRequest, project_id: int) -> HttpResponse:
    project = annotation_selectors.project_get(project_id=project_id)
    loop = loop_settings_services.loop_settings_get(project=project)
    form = _settings_form(loop, request.POST)
    saved = form.is_valid()
    if saved:
        try:
            loop = loop_settings_services.loop_settings_update(project=project, **form.cleaned_data)
        except ApplicationError as exc:
            # An error about one setting goes next to its field; the rest above the form.
            fields = {field: message for field, message in exc.field_messages().items() if field in form.fields}
            for field, message in fields.items():
                form.add_error(field, message)
            if not fields:
                form.add_error(None, exc.message)
            saved = False
    notice = "Loop settings saved." if saved else ""
    if is_htmx(request):
        context = {
            "project": project,
            "loop": loop,
            "settings_form": _settings_form(loop) if saved else form,
            "can_edit_settings": True,
            "notice": notice,
        }
        return render(request, "frontend/training/_settings.html", context)
    if saved:
        messages.success(request, notice)
        return redirect("frontend:training_page", project_id=project.pk)
    context = {**_training_context(request, project), "settings_form": form}
    return render(request, "frontend/training/page.html", context, status=400)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def evaluation_create(request: HttpRequest, project_id: int) -> HttpResponse:
    """Start a human evaluation of two policies; a refusal (the same policy twice, one still open)
    shows next to the field it is about, or above the form."""
    project = annotation_selectors.project_get(project_id=project_id)
    form = evaluations.evaluation_start_form(project, request.POST)
    started: Evaluation | None = None
    status = 400
    if form.is_valid():
        versions = {v.pk: v for v in selectors.model_version_list(project=project)}
        try:
            started = evaluation_start(
                project=project,
                candidate=versions[form.cleaned_data["candidate"]],
                baseline=versions[form.cleaned_data["baseline"]],
                actor=current_user(request),
            )
        except ApplicationError as exc:
            status = exc.status
            fields = {field: message for field, message in exc.field_messages().items() if field in form.fields}
            for field, message in fields.items():
                form.add_error(field, message)
            if not fields:
                form.add_error(None, exc.message)
    notice = (
        f"Evaluation {started.pk} started: '{started.candidate.name}' against '{started.baseline.name}'."
        if started is not None
        else ""
    )
    if is_htmx(request):
        section = evaluations.evaluations_context(
            project, form=None if started else form, notice=notice, started=started
        )
        # 200 with the errors in the form: htmx swaps no 4xx answer in.
        response = render(request, "frontend/training/_evaluations.html", section)
        if started is not None:
            response["HX-Trigger"] = "runs-changed"  # its evaluate run is queued
        return response
    if started is not None:
        messages.success(request, notice)
        return redirect("frontend:evaluation_detail", evaluation_id=started.pk)
    context = {**_training_context(request, project), **evaluations.evaluations_context(project, form=form)}
    return render(request, "frontend/training/page.html", context, status=status)


# --- one run --------------------------------------------------------------------------------------


def _charts(run: TrainingRun) -> list[dict[str, Any]]:
    metrics = run.metrics or {}
    out = []
    if run.kind == RunKind.REWARD:
        human = last_value(metrics.get("reward/human_agreement"))
        if human is None:  # a run that reported it only at the end
            human = RunSummary.from_json(run.kind, run.summary).metrics.get("reward/human_agreement")
        for key, title, as_percent in REWARD_CHARTS:
            reference = human if key == "reward/accuracy" else None
            if not metrics.get(key) and reference is None:
                continue
            chart = charts.series_chart(
                metrics.get(key), percent=as_percent, reference=reference, reference_label="human agreement"
            )
            out.append(
                {
                    "key": key,
                    "title": title,
                    "chart": chart,
                    "last": last_value(metrics.get(key)),
                    "percent": as_percent,
                }
            )
    elif run.kind == RunKind.PPO:
        for key, title, as_percent in PPO_CHARTS:
            if metrics.get(key):
                chart = charts.series_chart(metrics[key], percent=as_percent)
                out.append(
                    {
                        "key": key,
                        "title": title,
                        "chart": chart,
                        "last": last_value(metrics[key]),
                        "percent": as_percent,
                    }
                )
    return out


def _snapshot_items(snapshot: dict[str, Any]) -> list[tuple[str, str]]:
    items = []
    for key, value in (snapshot or {}).items():
        if isinstance(value, list):
            shown = ", ".join(str(v) for v in value[:SNAPSHOT_IDS_SHOWN])
            more = f" … ({len(value)} in all)" if len(value) > SNAPSHOT_IDS_SHOWN else ""
            items.append((key, f"{shown}{more}" if value else "none"))
        else:
            items.append((key, json.dumps(value) if isinstance(value, dict) else str(value)))
    return items


def _run_live_context(run: TrainingRun) -> dict[str, Any]:
    summary = RunSummary.from_json(run.kind, run.summary)
    return {
        **_run_row(run),
        "project": run.project,
        "charts": _charts(run),
        "gate": summary.gate,
        "eval_samples": summary.eval_samples,
        "samples": summary.samples,
        "snapshot": _snapshot_items(run.data_snapshot),
        "summary_metrics": summary.scalar_metrics,
        **evaluations.run_evaluations(run),
    }


def _run(run_id: int) -> TrainingRun:
    return selectors.training_run_get(run_id=run_id)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    context = {
        **_run_live_context(run),
        "section": "training",
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "inputs": (
            [("Candidate policy", run.policy), ("Baseline policy", run.reference)]
            if run.kind == RunKind.EVALUATE
            else [("Policy", run.policy), ("SFT reference", run.reference), ("Reward model", run.reward_model)]
        ),
    }
    return render(request, "frontend/training/run.html", context)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """Status, progress, charts and log of one run; it polls itself until the run has finished."""
    return render(request, "frontend/training/_run_live.html", _run_live_context(_run(run_id)))


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _run(run_id)
    notice = error = ""
    try:
        run = runs.training_run_cancel(run=run)
    except ApplicationError as exc:
        error = exc.message
    else:
        notice = (
            f"Run {run.pk} cancelled."
            if run.is_finished
            else f"Cancel requested: run {run.pk} stops at its next progress report."
        )
    if is_htmx(request):
        context = {**_run_live_context(_run(run_id)), "notice": notice, "error": error}
        return render(request, "frontend/training/_run_live.html", context)
    if error:
        messages.error(request, error)
    else:
        messages.success(request, notice)
    return redirect("frontend:run_detail", run_id=run_id)


# --- two versions side by side ---------------------------------------------------------------------


def _version_id(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    version_id = parse_id(value)
    if version_id is None:
        raise ApplicationError(f"{name}: expected a model version id, got {value!r}.", code="invalid")
    return version_id


def _project_version(project: Project, version_id: int, name: str) -> ModelVersion:
    version = selectors.model_version_list(project=project).filter(pk=version_id).first()
    if version is None:
        raise NotFound(f"{name}: model version {version_id} not found in project '{project.name}'.")
    return version


def _figures(version: ModelVersion) -> list[tuple[str, str]]:
    """The stored figures that matter for a version's kind, as label and text."""
    metrics = ModelMetrics.from_json(version.kind, version.metrics)
    figures, gate = metrics.figures, metrics.gate
    if version.kind == ModelKind.REWARD:
        promoted_then = gate.promoted_accuracy if isinstance(gate, RewardGate) else None
        return [
            ("Held-out accuracy", percent(metrics.accuracy)),
            ("Promoted model's accuracy then", percent(promoted_then)),
            ("Human agreement", percent(figures.get("reward/human_agreement"))),
            ("Mean margin", number(figures.get("reward/mean_margin"))),
            ("Held-out pairs", str(figures.get("reward/eval_pairs", "—"))),
            ("Reward offset (subtracted)", number(figures.get("reward/offset"), 4)),
            ("Reward scale (divided by)", number(figures.get("reward/scale"), 4)),
            ("Evaluation passed", _passed(metrics.passed)),
        ]
    ppo = gate if isinstance(gate, PPOGate) else None
    return [
        ("Held-out reward (its run's evaluation)", number(ppo.candidate_reward if ppo else None)),
        ("Starting policy's held-out reward there", number(ppo.baseline_reward if ppo else None)),
        ("KL to the reference", "0 (it is the reference)" if version.is_reference else number(metrics.kl)),
        ("Last training reward", number(figures.get("ppo/reward"))),
        ("Evaluation passed", _passed(metrics.passed)),
    ]


def _figure_rows(a: ModelVersion, b: ModelVersion) -> list[tuple[str, str, str]]:
    """Figures of both versions in one table; rows of a kind the other lacks show a dash."""
    left, right = dict(_figures(a)), dict(_figures(b))
    labels = list(left) + [label for label in right if label not in left]
    return [(label, left.get(label, "—"), right.get(label, "—")) for label in labels]


def _passed(value: Any) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _side(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version,
        "lineage": selectors.model_version_lineage(version=version),
        "figures": _figures(version),
    }


def _metric_rows(a: ModelVersion, b: ModelVersion) -> list[dict[str, Any]]:
    def scalars(v: ModelVersion) -> dict[str, float]:
        return {k: float(x) for k, x in ModelMetrics.from_json(v.kind, v.metrics).figures.items()}

    left, right = scalars(a), scalars(b)
    return [
        {"key": key, "a": number(left.get(key), 4), "b": number(right.get(key), 4)}
        for key in sorted(set(left) | set(right))
    ]


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def compare_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = annotation_selectors.project_get(project_id=project_id)
    versions = list(selectors.model_version_list(project=project))
    a_id, b_id = _version_id(request.GET.get("a"), "a"), _version_id(request.GET.get("b"), "b")
    context: dict[str, Any] = {
        "project": project,
        "section": "training",
        "versions": versions,
        "a_id": a_id,
        "b_id": b_id,
    }
    if a_id is None or b_id is None:
        return render(request, "frontend/training/compare.html", context)
    a, b = _project_version(project, a_id, "a"), _project_version(project, b_id, "b")
    samples = None
    if a.kind == b.kind == ModelKind.POLICY:
        samples = selectors.policy_versions_sample_compare(a=a, b=b)
        for row in samples["rows"]:
            row["prompt_text"] = prompt_text(row["prompt"])
            row["a_reward"], row["b_reward"] = as_number(row["a_reward"]), as_number(row["b_reward"])
    sides = [_side(a), _side(b)]
    context.update(
        {
            "a": sides[0],
            "b": sides[1],
            "sides": sides,
            "figure_rows": _figure_rows(a, b),
            "same_kind": a.kind == b.kind,
            "metric_rows": _metric_rows(a, b),
            "samples": samples,
            "swap_url": f"{reverse('frontend:compare_page', kwargs={'project_id': project.pk})}?a={b.pk}&b={a.pk}",
        }
    )
    return render(request, "frontend/training/compare.html", context)
