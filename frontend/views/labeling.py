"""Labeler pages: project list, guideline acknowledgement, the ranking page and its endpoints."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import authenticate, login
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import selectors, services
from annotation.models import Assignment, Project, TaskMode
from config.exceptions import ApplicationError
from frontend.rendering import render_markdown, render_prompt
from frontend.views.common import (
    current_user,
    error_json,
    error_page,
    json_body,
    json_role_required,
    role_required,
)
from labelers.models import Role
from labelers.selectors import user_role

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHI"
SKIP_REASONS = (
    "I cannot judge this topic",
    "The prompt is unclear or broken",
    "The responses are unreadable or duplicated",
)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("login")
    role = user_role(user=current_user(request))
    if role in (Role.ADMIN, Role.ML_ENGINEER):
        return redirect("frontend:project_list")
    if role != Role.LABELER:
        return error_page(request, title="No role", message="Your account has no role yet; ask an admin.", status=403)
    projects = [
        {"project": project, "progress": selectors.labeler_progress(project=project, labeler=current_user(request))}
        for project in selectors.project_list(active_only=True)
    ]
    return render(request, "frontend/labeling/home.html", {"projects": projects})


@role_required(Role.LABELER)
@require_http_methods(["GET", "POST"])
def guideline_acknowledge(request: HttpRequest, project_id: int) -> HttpResponse:
    project = selectors.project_get_visible(project_id=project_id, user=current_user(request))
    guideline = project.current_guideline
    if guideline is None:
        return redirect("frontend:work", project_id=project.pk)
    if request.method == "POST":
        services.guideline_acknowledge(guideline=guideline, user=current_user(request))
        return redirect("frontend:work", project_id=project.pk)
    pending = selectors.guideline_needs_ack(project=project, user=current_user(request)) is not None
    return render(
        request,
        "frontend/labeling/guideline.html",
        {"project": project, "guideline": guideline, "body_html": render_markdown(guideline.body), "pending": pending},
    )


def _item_context(*, project: Project, labeler: AbstractBaseUser, assignment: Assignment | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "project": project,
        "assignment": assignment,
        "progress": selectors.labeler_progress(project=project, labeler=labeler),
        "likert": range(1, 8),
        "skip_reasons": SKIP_REASONS,
    }
    if assignment is None:
        return context
    prompt = assignment.response_set.prompt
    responses = selectors.assignment_responses(assignment=assignment)
    pairwise = project.task_mode == TaskMode.PAIRWISE
    cards = [
        {"id": response.pk, "letter": LETTERS[index], "html": render_markdown(response.text)}
        for index, response in enumerate(responses)
    ]
    context.update(
        pairwise=pairwise,
        turns=render_prompt(text=prompt.text, messages=prompt.messages),
        cards=cards,
        ranks=range(1, project.k + 1),
        widget={
            "assignment_id": assignment.pk,
            "mode": project.task_mode,
            "k": project.k,
            "require_likert": project.require_likert,
            "response_ids": [card["id"] for card in cards],
            "letters": [card["letter"] for card in cards],
            "submit_url": reverse("frontend:submit", kwargs={"assignment_id": assignment.pk}),
            "skip_url": reverse("frontend:skip", kwargs={"assignment_id": assignment.pk}),
            "expires_at": assignment.expires_at.isoformat(),
        },
    )
    return context


def _lease(request: HttpRequest, project: Project) -> Assignment | None:
    return services.assignment_lease_next(project=project, labeler=current_user(request))


@role_required(Role.LABELER)
@require_GET
def work(request: HttpRequest, project_id: int) -> HttpResponse:
    """The ranking page: the labeler's current item (their open lease, else the next one)."""
    project = selectors.project_get(project_id=project_id)
    if selectors.guideline_needs_ack(project=project, user=current_user(request)) is not None:
        return redirect("frontend:guideline_ack", project_id=project.pk)
    try:
        assignment = _lease(request, project)
    except ApplicationError as exc:
        if exc.code == "guideline_not_acknowledged":
            return redirect("frontend:guideline_ack", project_id=project.pk)
        return error_page(request, title="No work for you here", message=exc.message, status=exc.status)
    context = _item_context(project=project, labeler=current_user(request), assignment=assignment)
    guideline = project.current_guideline
    context["guideline"] = guideline
    context["guideline_html"] = render_markdown(guideline.body) if guideline else ""
    return render(request, "frontend/labeling/work.html", context)


def _next_item_json(request: HttpRequest, project: Project, *, done: str, **extra: Any) -> JsonResponse:
    """The answer to an accepted submit or skip (``done`` says which): the next item's HTML. The
    action was accepted whatever happens to the next lease, so the answer is always a success: a
    refused lease (a pause, a deactivated project, a failed qualification) is shown in place of the
    next item, and the page drops its draft instead of offering to send it again."""
    try:
        assignment = _lease(request, project)
    except ApplicationError as exc:
        if exc.code == "guideline_not_acknowledged":
            url = reverse("frontend:guideline_ack", kwargs={"project_id": project.pk})
            return JsonResponse({"redirect": url, "detail": exc.message, **extra})
        html = format_html(
            '<section id="item" class="item" data-assignment-id=""><div class="done" id="no-next-item">'
            '<h1>{}</h1><p class="error-text" role="alert">{}</p>'
            '<a class="button primary" href="{}">Back to my projects</a></div></section>',
            done,
            exc.message,
            reverse("frontend:home"),
        )
        return JsonResponse({"html": html, "assignment_id": None, "detail": exc.message, "code": exc.code, **extra})
    context = _item_context(project=project, labeler=current_user(request), assignment=assignment)
    html = render_to_string("frontend/labeling/_item.html", context, request=request)
    return JsonResponse({"html": html, "assignment_id": assignment.pk if assignment else None, **extra})


@json_role_required(Role.LABELER)
@require_POST
def submit(request: HttpRequest, assignment_id: int) -> JsonResponse:
    """Submit a ranking (or a pairwise choice), then answer with the next item's HTML."""
    try:
        body = json_body(request)
        assignment = selectors.assignment_get(assignment_id=assignment_id, labeler=current_user(request))
        ranking, created = services.ranking_submit(
            assignment_id=assignment.pk, labeler=current_user(request), **services.ranking_submit_input(body)
        )
    except ApplicationError as exc:
        return error_json(exc)
    if not created:
        logger.info("repeat submit of assignment %s answered with ranking %s", assignment_id, ranking.pk)
    project = assignment.response_set.project
    return _next_item_json(
        request, project, done="Your ranking was saved.", submitted=assignment.pk, ranking_id=ranking.pk
    )


@json_role_required(Role.LABELER)
@require_POST
def skip(request: HttpRequest, assignment_id: int) -> JsonResponse:
    try:
        body = json_body(request)
        assignment = selectors.assignment_get(assignment_id=assignment_id, labeler=current_user(request))
        services.assignment_skip(
            assignment_id=assignment.pk, labeler=current_user(request), reason=body.get("reason", "")
        )
    except ApplicationError as exc:
        return error_json(exc)
    return _next_item_json(request, assignment.response_set.project, done="Your skip was saved.", skipped=assignment.pk)


@require_GET
def session_csrf(request: HttpRequest) -> JsonResponse:
    """A fresh CSRF token (and cookie) for the log-in-again dialog after a session expired."""
    return JsonResponse({"csrf": get_token(request), "authenticated": request.user.is_authenticated})


@require_POST
def session_login(request: HttpRequest) -> JsonResponse:
    """Log in from inside the ranking page, keeping the page and its unsent work."""
    user = authenticate(request, username=request.POST.get("username", ""), password=request.POST.get("password", ""))
    if user is None or not user.is_active:
        return JsonResponse({"detail": "Wrong username or password.", "code": "invalid_credentials"}, status=400)
    login(request, user)
    return JsonResponse({"csrf": get_token(request), "username": user.get_username()})
