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
from frontend.views.common import current_user, is_admin, is_htmx, role_required
from labelers.models import Role
from rlhf import selectors, services
from rlhf.models import LoopSettings, ModelKind, ModelState, ModelVersion, RunKind, TrainingRun

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


def _number(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _percent(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _last(series: Any) -> float | None:
    """The last value of a ``[[step, value], ...]`` series, or a plain number as it is."""
    if isinstance(series, list) and series:
        item = series[-1]
        value = item[-1] if isinstance(item, list | tuple) else item
        return float(value) if isinstance(value, int | float) else None
    return float(series) if isinstance(series, int | float) and not isinstance(series, bool) else None


def _prompt_text(prompt: Any) -> str:
    """A stored sample prompt, text or chat messages, as plain text."""
    if isinstance(prompt, list):
        return "\n".join(
            f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, dict) else str(m) for m in prompt
        )
    return "" if prompt is None else str(prompt)


def _version_figure(version: ModelVersion) -> str:
    """The one number that says how good a version was when it was made."""
    metrics = version.metrics or {}
    evaluation = metrics.get("evaluation") or {}
    if version.kind == ModelKind.REWARD:
        accuracy = evaluation.get("new_accuracy", metrics.get("reward/accuracy"))
        return f"accuracy {_percent(accuracy)}" if accuracy is not None else ""
    parts = []
    if evaluation.get("candidate_reward") is not None:
        parts.append(f"held-out reward {_number(evaluation['candidate_reward'])}")
    kl = evaluation.get("kl", metrics.get("ppo/kl"))
    if kl is not None:
        parts.append(f"KL {_number(kl)}")
    return ", ".join(parts)


def _version_row(version: ModelVersion, promoted: dict[str, ModelVersion]) -> dict[str, Any]:
    current = promoted.get(version.kind)
    evaluation = (version.metrics or {}).get("evaluation") or {}
    return {
        "version": version,
        "figure": _version_figure(version),
        "passed": evaluation.get("passed"),
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
    loop = services.loop_settings_get(project=project)
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
        raise ApplicationError(f"config: not valid JSON ({exc}).", code="invalid_config") from None
    if not isinstance(value, dict):
        raise ApplicationError("config: must be a JSON object.", code="invalid_config")
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
    error, status = "", 200
    try:
        run = services.training_run_start(
            project=project, kind=kind, config=_config_overrides(config_text), created_by=current_user(request)
        )
    except ApplicationError as exc:
        error, status = exc.message, exc.status
    notice = f"{RunKind(run.kind).label} queued as run {run.pk}." if run is not None else ""
    if is_htmx(request):
        context = {
            "project": project,
            "start_buttons": START_BUTTONS,
            "notice": notice,
            "error": error,
            "started": run,
            "config_text": config_text if error else "",
        }
        response = render(request, "frontend/training/_start.html", context)
        if run is not None:
            response["HX-Trigger"] = "runs-changed"
        return response
    if run is not None:
        messages.success(request, notice)
        return redirect("frontend:run_detail", run_id=run.pk)
    context = {**_training_context(request, project), "error": error, "config_text": config_text}
    return render(request, "frontend/training/page.html", context, status=status)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def model_promote(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.model_version_get(version_id=version_id)
    if version.project_id is None:
        raise NotFound(f"Model version {version_id} belongs to no project.")
    version = services.model_version_promote(version=version)
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
        version = services.model_version_rollback(project=project, kind=kind)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Rolled back: {version.name} is the promoted {ModelKind(kind).label.lower()} again.")
    return redirect("frontend:training_page", project_id=project.pk)


@role_required(Role.ADMIN)
@require_POST
def loop_settings_update(request: HttpRequest, project_id: int) -> HttpResponse:
    project = annotation_selectors.project_get(project_id=project_id)
    loop = services.loop_settings_get(project=project)
    form = _settings_form(loop, request.POST)
    saved = form.is_valid()
    if saved:
        try:
            loop = services.loop_settings_update(project=project, **form.cleaned_data)
        except ApplicationError as exc:
            # "sft_data_path: line 3: ..." belongs next to its field; the rest above the form.
            field = exc.message.split(":", 1)[0]
            form.add_error(field if field in form.fields else None, exc.message)
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


# --- one run --------------------------------------------------------------------------------------


def _charts(run: TrainingRun) -> list[dict[str, Any]]:
    metrics = run.metrics or {}
    summary_metrics = (run.summary or {}).get("metrics") or {}
    out = []
    if run.kind == RunKind.REWARD:
        human = _last(metrics.get("reward/human_agreement"))
        if human is None:
            human = _last(summary_metrics.get("reward/human_agreement"))
        for key, title, percent in REWARD_CHARTS:
            reference = human if key == "reward/accuracy" else None
            if not metrics.get(key) and reference is None:
                continue
            chart = charts.series_chart(
                metrics.get(key), percent=percent, reference=reference, reference_label="human agreement"
            )
            out.append(
                {"key": key, "title": title, "chart": chart, "last": _last(metrics.get(key)), "percent": percent}
            )
    elif run.kind == RunKind.PPO:
        for key, title, percent in PPO_CHARTS:
            if metrics.get(key):
                chart = charts.series_chart(metrics[key], percent=percent)
                out.append(
                    {"key": key, "title": title, "chart": chart, "last": _last(metrics[key]), "percent": percent}
                )
    return out


def _check(ok: bool | None, text: str) -> dict[str, Any]:
    return {"ok": ok, "text": text}


def _evaluation(run: TrainingRun) -> dict[str, Any] | None:
    """The promotion check of a finished run in words: passed or not, and each reason."""
    evaluation = (run.summary or {}).get("evaluation")
    if not isinstance(evaluation, dict):
        return None
    checks = []
    if run.kind == RunKind.REWARD:
        new, floor = evaluation.get("new_accuracy"), evaluation.get("min_accuracy")
        if new is not None and floor is not None:
            ok = new >= floor
            checks.append(
                _check(ok, f"Held-out accuracy {_percent(new)} {'≥' if ok else '<'} the minimum {_percent(floor)}.")
            )
        old = evaluation.get("promoted_accuracy")
        if old is not None and new is not None:
            ok = new > old
            checks.append(
                _check(
                    ok,
                    f"The promoted reward model (version {evaluation.get('promoted_version', '?')}) scores "
                    f"{_percent(old)} on the same pairs: {'beaten' if ok else 'not beaten'}.",
                )
            )
        elif new is not None:
            checks.append(_check(True, "No promoted reward model to beat."))
        human = _last(((run.summary or {}).get("metrics") or {}).get("reward/human_agreement"))
        if human is None:
            human = _last((run.metrics or {}).get("reward/human_agreement"))
        if human is not None:
            checks.append(_check(None, f"Human agreement on the held-out pairs: {_percent(human)} (the ceiling)."))
    elif run.kind == RunKind.PPO:
        cand, base = evaluation.get("candidate_reward"), evaluation.get("baseline_reward")
        if cand is not None and base is not None:
            ok = cand > base
            checks.append(
                _check(
                    ok,
                    f"Held-out reward {_number(cand)} against {_number(base)} for the policy it started from "
                    f"({'better' if ok else 'not better'}; {evaluation.get('prompts', '?')} prompts).",
                )
            )
        kl, max_kl = evaluation.get("kl"), evaluation.get("max_kl")
        if kl is not None and max_kl is not None:
            ok = kl <= max_kl
            checks.append(
                _check(ok, f"KL to the reference {_number(kl)} {'≤' if ok else '>'} the limit {_number(max_kl)}.")
            )
    return {"passed": evaluation.get("passed"), "checks": checks, "raw": evaluation}


def _score(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _sample_rows(samples: Any) -> list[dict[str, Any]]:
    if not isinstance(samples, list):
        return []
    return [
        {
            "prompt_text": _prompt_text(s.get("prompt")),
            "response": str(s.get("response", "")),
            "reward": _score(s.get("reward")),
            "has_baseline": "baseline_response" in s,
            "baseline_response": str(s.get("baseline_response", "")),
            "baseline_reward": _score(s.get("baseline_reward")),
        }
        for s in samples
        if isinstance(s, dict)
    ]


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
    summary = run.summary or {}
    evaluation = _evaluation(run)
    return {
        **_run_row(run),
        "project": run.project,
        "charts": _charts(run),
        "evaluation": evaluation,
        "eval_samples": _sample_rows((summary.get("evaluation") or {}).get("samples")),
        "samples": _sample_rows(summary.get("samples")),
        "snapshot": _snapshot_items(run.data_snapshot),
        "summary_metrics": sorted(
            (k, v) for k, v in (summary.get("metrics") or {}).items() if isinstance(v, int | float)
        ),
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
        "inputs": [("Policy", run.policy), ("SFT reference", run.reference), ("Reward model", run.reward_model)],
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
        run = services.training_run_cancel(run=run)
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
    metrics = version.metrics or {}
    evaluation = metrics.get("evaluation") or {}
    if version.kind == ModelKind.REWARD:
        return [
            ("Held-out accuracy", _percent(evaluation.get("new_accuracy", metrics.get("reward/accuracy")))),
            ("Promoted model's accuracy then", _percent(evaluation.get("promoted_accuracy"))),
            ("Human agreement", _percent(metrics.get("reward/human_agreement"))),
            ("Mean margin", _number(metrics.get("reward/mean_margin"))),
            ("Held-out pairs", str(metrics.get("reward/eval_pairs", "—"))),
            ("Reward offset (subtracted)", _number(metrics.get("reward/offset"), 4)),
            ("Reward scale (divided by)", _number(metrics.get("reward/scale"), 4)),
            ("Evaluation passed", _passed(evaluation.get("passed"))),
        ]
    return [
        ("Held-out reward (its run's evaluation)", _number(evaluation.get("candidate_reward"))),
        ("Starting policy's held-out reward there", _number(evaluation.get("baseline_reward"))),
        (
            "KL to the reference",
            "0 (it is the reference)" if version.is_reference else _number(evaluation.get("kl", metrics.get("ppo/kl"))),
        ),
        ("Last training reward", _number(metrics.get("ppo/reward"))),
        ("Evaluation passed", _passed(evaluation.get("passed"))),
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
        return {
            k: float(x) for k, x in (v.metrics or {}).items() if isinstance(x, int | float) and not isinstance(x, bool)
        }

    left, right = scalars(a), scalars(b)
    return [
        {"key": key, "a": _number(left.get(key), 4), "b": _number(right.get(key), 4)}
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
            row["prompt_text"] = _prompt_text(row["prompt"])
            row["a_reward"], row["b_reward"] = _score(row["a_reward"]), _score(row["b_reward"])
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
