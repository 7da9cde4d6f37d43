"""Quality pages for admins and ML engineers: the agreement report with its plots, heatmap and
per-labeler table, drill-downs to the sets behind a number, and the review queue. Only admins act
(refresh aside), as in the API."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_POST

from annotation import selectors
from annotation.models import Project, Ranking, ResponseSet, ReviewState
from config.exceptions import ApplicationError, NotFound
from frontend import charts
from frontend.templatetags.frontend_tags import num, pct
from frontend.views.common import current_user, is_admin, is_htmx, role_required
from labelers.models import Role
from quality import selectors as quality_selectors
from quality import services as quality_services
from quality.models import QualificationState
from quality.records import AgreementReportRecord, LabelerRow
from quality.selectors import LatestReport
from quality.tasks import agreement_refresh

logger = logging.getLogger(__name__)

# (headline statistic, label, format, what its count counts)
HEADLINE = (
    ("percent_agreement", "Percent agreement", pct, "label pairs"),
    ("percent_agreement_no_ties", "Percent agreement without ties", pct, "label pairs"),
    ("krippendorff_alpha_ordinal", "Krippendorff's α (ordinal)", num, ""),
    ("krippendorff_alpha_interval_ranks", "Krippendorff's α (interval, on ranks)", num, ""),
    ("fleiss_kappa", "Fleiss' κ", num, "raters per pair"),
    ("kendall_w_mean", "Mean Kendall's W", num, "sets"),
    ("kendall_tau_mean", "Mean Kendall's τ", num, "ranking pairs"),
    ("consensus_confidence_mean", "Consensus confidence", pct, ""),
)
REVIEW_STATES = {
    "needs_review": "Needs review",
    "more_labels": "More labels asked",
    "accepted": "Accepted",
}


def headline_items(report: AgreementReportRecord) -> list[dict[str, str]]:
    """The headline statistics as display strings, with their 95% interval where the report has one."""
    items = []
    for key, label, fmt, count_label in HEADLINE:
        stat = report.headline.get(key)
        if stat is None:
            continue
        ci = stat.ci95
        items.append(
            {
                "key": key,
                "label": label,
                "value": fmt(stat.value),
                "ci": f"95% CI {fmt(ci[0])} – {fmt(ci[1])}" if ci else "",
                "note": f"{stat.count} {count_label}" if stat.count is not None else "",
            }
        )
    return items


def freshness_text(latest: LatestReport) -> str:
    """``computed 3 min ago, 12 rankings not included yet``."""
    from frontend.templatetags.frontend_tags import ago

    if latest.status == "missing":
        waiting = latest.rankings_not_included
        return f"not computed yet, {waiting} ranking{'s' if waiting != 1 else ''} waiting"
    text = f"computed {ago(latest.age_seconds)}"
    unseen = latest.rankings_not_included
    if unseen:
        return f"{text}, {unseen} ranking{'s' if unseen != 1 else ''} not included yet"
    return f"{text}, includes every ranking"


def _freshness_context(project: Project, latest: LatestReport) -> dict[str, Any]:
    computed_at = parse_datetime(latest.computed_at) if latest.computed_at else None
    return {"project": project, "latest": latest, "freshness": freshness_text(latest), "computed_at": computed_at}


def _heatmap(report: AgreementReportRecord, project: Project) -> dict[str, Any]:
    labelers = [(row.labeler_id, row.username) for row in report.by_labeler]
    cells = {}
    for row in report.by_labeler_pair:
        cells[(row.a, row.b)] = cells[(row.b, row.a)] = row
    base = reverse("frontend:quality_sets", kwargs={"project_id": project.pk})
    rows = []
    for a, name in labelers:
        line = []
        for b, other in labelers:
            cell = cells.get((a, b))
            line.append(
                {
                    "self": a == b,
                    "value": cell.percent_agreement if cell else None,
                    "pairs": cell.pairs if cell else 0,
                    "kappa": cell.cohens_kappa if cell else None,
                    "color": charts.heat_color(cell.percent_agreement if cell else None),
                    "href": f"{base}?pair={min(a, b)}-{max(a, b)}" if cell else "",
                    "title": f"{name} and {other}",
                }
            )
        rows.append({"labeler_id": a, "username": name, "cells": line})
    return {"labelers": [name for _, name in labelers], "rows": rows}


def _labeler_row(row: LabelerRow, standing: dict[str, Any], project: Project) -> dict[str, Any]:
    """The report's row of one labeler (``figures``) with their standing now."""
    failed = row.qualification == QualificationState.FAILED
    return {
        "figures": row,
        "standing": standing,
        "qualification_label": QualificationState(row.qualification).label,
        "failed": failed,
        "reliability_warn": row.reliability_below(project.reliability_threshold),
        "can_override": standing["auto_paused"] or failed,
    }


def _labeler_rows(report: AgreementReportRecord, project: Project) -> list[dict[str, Any]]:
    rows = report.by_labeler
    standing = quality_selectors.labeler_standing(project=project, labeler_ids=[row.labeler_id for row in rows])
    return [_labeler_row(row, standing[row.labeler_id], project) for row in rows]


def _csv_links(project: Project) -> list[tuple[str, str]]:
    return [
        (table, reverse("agreement-csv", kwargs={"project_id": project.pk, "table": table}))
        for table in quality_selectors.CSV_TABLES
    ]


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def quality_index(request: HttpRequest) -> HttpResponse:
    rows = []
    for project in selectors.project_list():
        latest = quality_selectors.agreement_report_latest(project=project)
        head = latest.report.headline if latest.report is not None else None
        rows.append(
            {
                "project": project,
                "latest": latest,
                "freshness": freshness_text(latest),
                "agreement": head.percent_agreement.value if head and head.percent_agreement else None,
                "kendall_w": head.kendall_w_mean.value if head and head.kendall_w_mean else None,
                "review": quality_selectors.review_counts(project=project)["needs_review"],
            }
        )
    return render(request, "frontend/quality/index.html", {"rows": rows, "section": "quality"})


def _quality_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    latest = quality_selectors.agreement_report_latest(project=project)
    report = latest.report if latest.report is not None else AgreementReportRecord()
    overall = report.headline.percent_agreement
    sets_url = reverse("frontend:quality_sets", kwargs={"project_id": project.pk})
    versions = report.by_guideline_version
    return {
        **_freshness_context(project, latest),
        "section": "quality",
        "report": latest.report,
        "headline": headline_items(report),
        "over_time": charts.agreement_over_time(report.over_time, overall=overall.value if overall else None),
        "by_version": charts.agreement_bars(
            [
                (
                    f"v{row.version}" if row.version else "none",
                    row.percent_agreement,
                    row.pairs,
                    f"{sets_url}?version={row.version or 0}",
                )
                for row in versions
            ]
        ),
        "versions": versions,
        "heatmap": _heatmap(report, project),
        "labelers": _labeler_rows(report, project),
        "tags": report.by_tag,
        "csv_links": _csv_links(project),
        "review": quality_selectors.review_counts(project=project),
        "can_act": is_admin(request),
    }


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def quality_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = selectors.project_get(project_id=project_id)
    return render(request, "frontend/quality/page.html", _quality_context(request, project))


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_POST
def quality_refresh(request: HttpRequest, project_id: int) -> HttpResponse:
    """Queue a forced recomputation on a worker; the page shows the report it has until then."""
    project = selectors.project_get(project_id=project_id)
    error = ""
    try:
        agreement_refresh.delay(project.pk, True)
    except Exception:  # a broker outage shows as a message, not a 500
        logger.exception("could not queue the agreement refresh of project %s", project.pk)
        error = "The task queue cannot be reached; the report was not refreshed. Try again in a minute."
    notice = "" if error else "Refresh queued: a worker recomputes the report; reload this page in a moment."
    if is_htmx(request):
        context = _freshness_context(project, quality_selectors.agreement_report_latest(project=project))
        return render(request, "frontend/quality/_freshness.html", {**context, "notice": notice, "error": error})
    if error:
        messages.error(request, error)
    else:
        messages.success(request, notice)
    return redirect("frontend:quality_page", project_id=project.pk)


@role_required(Role.ADMIN)
@require_POST
def quality_override(request: HttpRequest, project_id: int, user_id: int) -> HttpResponse:
    """Let a labeler work despite the automatic checks, or withdraw that; htmx swaps the table row."""
    project = selectors.project_get(project_id=project_id)
    user = get_user_model().objects.select_related("profile").filter(pk=user_id).first()
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    override = request.POST.get("override") == "1"
    quality_services.labeler_quality_override(
        project=project, labeler=user, override=override, actor=current_user(request)
    )
    name = user.get_username()
    notice = f"{name} may work on '{project.name}' again." if override else f"Override for {name} withdrawn."
    if is_htmx(request):
        report = quality_selectors.agreement_report_latest(project=project).report
        row = report.labeler(user.pk) if report is not None else None
        if row is None:
            raise NotFound(f"{name} has no figures in this project's report.")
        standing = quality_selectors.labeler_standing(project=project, labeler_ids=[user.pk])[user.pk]
        context = {"row": _labeler_row(row, standing, project), "project": project, "can_act": True}
        return render(request, "frontend/quality/_labeler_row.html", {**context, "notice": notice})
    messages.success(request, notice)
    return redirect("frontend:quality_page", project_id=project.pk)


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ApplicationError(f"{name}: expected a number, got {value!r}.", code="invalid") from None


def _drilldown_filters(request: HttpRequest, project: Project) -> tuple[dict[str, Any], str]:
    """The query string as selector arguments, and a title that says what the sets are behind."""
    names = dict(get_user_model().objects.values_list("pk", "username"))
    params = request.GET
    if "pair" in params:
        first, sep, second = params["pair"].partition("-")
        a, b = _int(first, "pair"), _int(second, "pair")
        if not sep or a is None or b is None:
            raise ApplicationError("pair: expected two labeler ids as '<a>-<b>'.", code="invalid")
        return {"pair": (a, b)}, f"Sets both {names.get(a, a)} and {names.get(b, b)} ranked"
    if "labeler" in params:
        labeler = _int(params["labeler"], "labeler")
        if labeler is None:
            raise ApplicationError("labeler: expected a labeler id.", code="invalid")
        return {"labeler_id": labeler}, f"Sets {names.get(labeler, labeler)} ranked (agreement with the others)"
    if "tag" in params:
        return {"tag": params["tag"]}, f"Sets tagged '{params['tag']}'"
    if "version" in params:
        version = _int(params["version"], "version") or 0
        label = f"guideline v{version}" if version else "no guideline"
        return {"version": version}, f"Sets ranked under {label} (label pairs within that version)"
    if params.get("low"):
        return {"low": True}, "Sets with low agreement (Kendall's W below the review threshold)"
    return {}, f"Every ranked set of '{project.name}'"


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def quality_sets(request: HttpRequest, project_id: int) -> HttpResponse:
    """The response sets behind one number of the report; htmx loads it under the tables."""
    project = selectors.project_get(project_id=project_id)
    filters, title = _drilldown_filters(request, project)
    result = quality_selectors.agreement_drilldown(project=project, **filters)
    context = {"project": project, "title": title, "result": result, "section": "quality"}
    if "labeler_id" in filters:  # the decisions about this labeler (overrides, pauses) beside their sets
        context["labeler_user"] = get_user_model().objects.filter(pk=filters["labeler_id"]).first()
    template = "frontend/quality/_drilldown.html" if is_htmx(request) else "frontend/quality/sets.html"
    return render(request, template, context)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def review_queue(request: HttpRequest, project_id: int) -> HttpResponse:
    project = selectors.project_get(project_id=project_id)
    state = request.GET.get("state", ReviewState.NEEDS_REVIEW)
    if state not in REVIEW_STATES:
        raise ApplicationError(f"state: must be one of {', '.join(REVIEW_STATES)}, got {state!r}.", code="invalid")
    report = quality_selectors.agreement_report_latest(project=project).report or AgreementReportRecord()
    context = {
        "project": project,
        "section": "quality",
        "state": state,
        "states": REVIEW_STATES,
        "counts": quality_selectors.review_counts(project=project),
        "rows": quality_selectors.review_queue(project=project, state=state),
        "threshold": report.review_threshold,
    }
    return render(request, "frontend/quality/review_queue.html", context)


def _project_set(project: Project, set_id: int) -> ResponseSet:
    response_set = ResponseSet.objects.select_related("project", "prompt").filter(pk=set_id, project=project).first()
    if response_set is None:
        raise NotFound(f"Response set {set_id} not found in project '{project.name}'.")
    return response_set


def _review_context(request: HttpRequest, project: Project, response_set: ResponseSet) -> dict[str, Any]:
    from frontend.rendering import render_markdown, render_prompt

    detail = quality_selectors.response_set_review_detail(response_set=response_set)
    for row in detail["rows"]:
        row["html"] = render_markdown(row["text"])
    queue = [row["response_set_id"] for row in quality_selectors.review_queue(project=project)]
    following = [pk for pk in queue if pk != response_set.pk]
    return {
        "project": project,
        "section": "quality",
        "detail": detail,
        "prompt_turns": render_prompt(text=response_set.prompt.text, messages=response_set.prompt.messages),
        "next_set": following[0] if following else None,
        "can_act": is_admin(request),
    }


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def review_set(request: HttpRequest, project_id: int, set_id: int) -> HttpResponse:
    project = selectors.project_get(project_id=project_id)
    response_set = _project_set(project, set_id)
    return render(request, "frontend/quality/review_set.html", _review_context(request, project, response_set))


def _ranking_of(response_set: ResponseSet, value: str | None) -> Ranking:
    ranking_id = _int(value, "ranking_id")
    ranking = (
        Ranking.objects.select_related("labeler").filter(pk=ranking_id, response_set=response_set).first()
        if ranking_id is not None
        else None
    )
    if ranking is None:
        raise ApplicationError(f"ranking_id: no ranking {value} on set {response_set.pk}.", code="invalid")
    return ranking


def _review_act(request: HttpRequest, response_set: ResponseSet, action: str) -> str:
    """Run one review action; returns what happened, in words."""
    if action == "accept":
        ranking = _ranking_of(response_set, request.POST.get("ranking_id"))
        quality_services.review_accept(response_set=response_set, ranking=ranking, actor=current_user(request))
        return f"{ranking.labeler.get_username()}'s ranking is now the consensus of set {response_set.pk}."
    if action == "more-labels":
        updated = quality_services.review_request_more_labels(response_set=response_set)
        return f"Set {response_set.pk} is back in the queue for one more label ({updated.required_count} in all)."
    if action == "gold":
        source = request.POST.get("ranking_id", "consensus")
        ranks = None if source == "consensus" else _ranking_of(response_set, source).ranks
        quality_services.response_set_make_gold(response_set=response_set, ranks=ranks, actor=current_user(request))
        whose = "its consensus" if ranks is None else "the chosen ranking"
        return f"Set {response_set.pk} is gold, with {whose} as the reference."
    raise NotFound(f"No review action '{action}'.")


@role_required(Role.ADMIN)
@require_POST
def review_action(request: HttpRequest, project_id: int, set_id: int, action: str) -> HttpResponse:
    """Accept a ranking as consensus, ask for one more label, or make the set gold."""
    project = selectors.project_get(project_id=project_id)
    response_set = _project_set(project, set_id)
    notice = error = ""
    try:
        notice = _review_act(request, response_set, action)
    except NotFound:
        raise
    except ApplicationError as exc:
        error = exc.message
    if is_htmx(request):
        response_set = _project_set(project, set_id)
        context = _review_context(request, project, response_set)
        return render(request, "frontend/quality/_review_body.html", {**context, "notice": notice, "error": error})
    if error:
        messages.error(request, error)
    else:
        messages.success(request, notice)
    return redirect("frontend:review_set", project_id=project.pk, set_id=set_id)
