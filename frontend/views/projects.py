"""Admin pages for projects: list, create, edit, import, progress and throughput."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotation import selectors, services
from annotation.models import ImportJob, ImportJobStatus, Project, default_flags
from annotation.services.import_jobs import import_job_create, import_runs_in_background
from annotation.services.projects import PROJECT_FIELDS
from config.exceptions import ApplicationError
from frontend.forms import ImportForm, ProjectForm
from frontend.views.common import current_user, is_admin, is_htmx, role_required
from labelers.models import Role

PROJECT_SERVICE_FIELDS = PROJECT_FIELDS


def attach_service_error(form: forms.Form, exc: ApplicationError) -> None:
    """Show a service's error next to the field it names (``errors``) when the form has that field."""
    shown = False
    for field, message in exc.field_messages().items():
        if field in form.fields:
            form.add_error(field, message)
            shown = True
    if not shown:
        form.add_error(None, exc.message)


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def project_list(request: HttpRequest) -> HttpResponse:
    rows = [
        {"project": project, "stats": selectors.project_stats(project=project)} for project in selectors.project_list()
    ]
    return render(request, "frontend/projects/list.html", {"rows": rows, "can_edit": is_admin(request)})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None, initial={"flags": ProjectForm.flags_text(default_flags())})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            project = services.project_create(
                created_by=current_user(request),
                guideline=data["guideline"],
                **{field: data[field] for field in PROJECT_SERVICE_FIELDS if data.get(field) is not None},
            )
        except ApplicationError as exc:
            attach_service_error(form, exc)
        else:
            messages.success(request, f"Project '{project.name}' created.")
            return redirect("frontend:project_detail", project_id=project.pk)
    return render(request, "frontend/projects/form.html", {"form": form, "project": None})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def project_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = selectors.project_get(project_id=project_id)
    initial: dict[str, Any] = {field: getattr(project, field) for field in PROJECT_SERVICE_FIELDS}
    initial["flags"] = ProjectForm.flags_text(project.flags)
    form = ProjectForm(request.POST or None, initial=initial)
    del form.fields["guideline"]  # later versions are published from the guideline page
    if request.method == "POST" and form.is_valid():
        try:
            services.project_update(
                project=project,
                **{f: form.cleaned_data[f] for f in PROJECT_SERVICE_FIELDS if form.cleaned_data.get(f) is not None},
            )
        except ApplicationError as exc:
            attach_service_error(form, exc)
        else:
            messages.success(request, "Project settings saved.")
            return redirect("frontend:project_detail", project_id=project.pk)
    return render(request, "frontend/projects/form.html", {"form": form, "project": project})


def _detail_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    return {
        "project": project,
        "stats": selectors.project_stats(project=project),
        "throughput": selectors.project_throughput(project=project),
        "import_form": ImportForm(),
        "can_edit": is_admin(request),
    }


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = selectors.project_get(project_id=project_id)
    return render(request, "frontend/projects/detail.html", _detail_context(request, project))


@role_required(Role.ADMIN)
@require_POST
def project_import(request: HttpRequest, project_id: int) -> HttpResponse:
    """Upload prompts and responses; answers with a summary or the per-line error report."""
    project = selectors.project_get(project_id=project_id)
    form = ImportForm(request.POST, request.FILES)
    report: dict[str, Any] = {}
    status = 200
    if not form.is_valid():
        report = {"detail": "Choose a file to import.", "errors": []}
        status = 400
    else:
        upload = form.cleaned_data["file"]
        try:
            if import_runs_in_background(upload.size or 0):
                job = import_job_create(
                    project=project,
                    content=upload.read(),
                    fmt=form.fmt(),
                    file_name=upload.name or "",
                    created_by=current_user(request),
                )
                report, status = {"job": job}, 202
            else:
                summary = services.prompts_import(project=project, content=upload.read(), fmt=form.fmt())
                report = {"summary": summary, "filename": upload.name}
        except ApplicationError as exc:
            report = {"detail": exc.message, "errors": exc.errors}
            status = exc.status
    if is_htmx(request):
        return render(request, "frontend/projects/_import_report.html", {"report": report}, status=status)
    context = _detail_context(request, project)
    context["report"] = report
    return render(request, "frontend/projects/detail.html", context, status=status)


@role_required(Role.ADMIN)
@require_GET
def project_import_job(request: HttpRequest, project_id: int, job_id: int) -> HttpResponse:
    """A background import's progress, then its summary or error report (htmx polls it)."""
    project = selectors.project_get(project_id=project_id)
    job = get_object_or_404(ImportJob, pk=job_id, project=project)
    report: dict[str, Any] = {"job": job}
    if job.status == ImportJobStatus.SUCCEEDED:
        report = {"summary": job.summary, "filename": job.file_name}
    elif job.status == ImportJobStatus.FAILED:
        report = {"detail": job.detail, "errors": job.errors}
    if is_htmx(request):
        return render(request, "frontend/projects/_import_report.html", {"report": report, "project": project})
    context = _detail_context(request, project)
    context["report"] = report
    return render(request, "frontend/projects/detail.html", context)
