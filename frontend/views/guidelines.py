"""Admin pages for guidelines: markdown editor with preview, publishing, history and diffs."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotation import selectors, services
from annotation.params import parse_id
from config.exceptions import ApplicationError
from frontend.forms import GuidelineForm
from frontend.rendering import render_markdown, text_diff
from frontend.views.common import current_user, is_admin, role_required
from frontend.views.projects import attach_service_error
from labelers.models import Role


@role_required(Role.ADMIN, Role.ML_ENGINEER)
@require_http_methods(["GET", "POST"])
def guideline_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """History of versions and, for admins, the editor that publishes the next one."""
    project = selectors.project_get(project_id=project_id)
    current = project.current_guideline
    form = GuidelineForm(request.POST or None, initial={"body": current.body if current else ""})
    if request.method == "POST":
        if not is_admin(request):
            return render(
                request,
                "frontend/error.html",
                {"title": "Not for your role", "message": "Only admins publish guidelines."},
                status=403,
            )
        if form.is_valid():
            try:
                guideline = services.guideline_publish(
                    project=project,
                    body=form.cleaned_data["body"],
                    note=form.cleaned_data["note"],
                    published_by=current_user(request),
                )
            except ApplicationError as exc:
                attach_service_error(form, exc)
            else:
                messages.success(
                    request, f"Version {guideline.version} published; labelers acknowledge it before their next item."
                )
                return redirect("frontend:guideline_page", project_id=project.pk)
    return render(
        request,
        "frontend/guidelines/page.html",
        {
            "project": project,
            "current": current,
            "versions": list(selectors.guideline_list(project=project)),
            "form": form,
            "preview_html": render_markdown(form["body"].value() or ""),
            "can_edit": is_admin(request),
        },
    )


@role_required(Role.ADMIN)
@require_POST
def guideline_preview(request: HttpRequest) -> HttpResponse:
    return render(
        request, "frontend/guidelines/_preview.html", {"preview_html": render_markdown(request.POST.get("body", ""))}
    )


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def guideline_version(request: HttpRequest, project_id: int, version: int) -> HttpResponse:
    """One version, rendered, with its diff against another (the previous one by default)."""
    project = selectors.project_get(project_id=project_id)
    guideline = selectors.guideline_get(project=project, version=version)
    versions = list(selectors.guideline_list(project=project))
    against_raw = request.GET.get("against", "")
    against_version = parse_id(against_raw) if against_raw else version - 1
    if against_version is None:
        raise ApplicationError(f"against: expected a guideline version number, got {against_raw!r}.", code="invalid")
    against = next((g for g in versions if g.version == against_version), None)
    return render(
        request,
        "frontend/guidelines/version.html",
        {
            "project": project,
            "guideline": guideline,
            "body_html": render_markdown(guideline.body),
            "versions": versions,
            "against": against,
            "diff": text_diff(against.body, guideline.body) if against else [],
        },
    )
