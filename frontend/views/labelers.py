"""Admin page for people: create or invite, set the role, pause or reactivate, counts and speed."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.tokens import default_token_generator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.views.decorators.http import require_http_methods, require_POST

from annotation import selectors as annotation_selectors
from config.exceptions import ApplicationError, NotFound
from frontend.forms import LabelerCreateForm, LabelerUpdateForm
from frontend.views.common import is_htmx, role_required
from frontend.views.projects import attach_service_error
from labelers.models import LabelerStatus, Role
from labelers.selectors import user_list
from labelers.services import user_create, user_update


def _rows(users: list[Any]) -> list[dict[str, Any]]:
    activity = annotation_selectors.labeler_activity(user_ids=[user.pk for user in users])
    return [
        {
            "user": user,
            "profile": getattr(user, "profile", None),
            "activity": activity[user.pk],
            "roles": Role.choices,
        }
        for user in users
    ]


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def labeler_list(request: HttpRequest) -> HttpResponse:
    form = LabelerCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user = user_create(
                username=data["username"], password=data["password"] or None, role=data["role"], email=data["email"]
            )
        except ApplicationError as exc:
            attach_service_error(form, exc)
        else:
            if data["password"]:
                messages.success(request, f"Account '{user.get_username()}' created.")
            else:
                link = request.build_absolute_uri(
                    reverse(
                        "password_reset_confirm",
                        kwargs={
                            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
                            "token": default_token_generator.make_token(user),  # type: ignore[arg-type]
                        },
                    )
                )
                messages.success(
                    request, f"'{user.get_username()}' invited. Send them this link to set a password: {link}"
                )
            return redirect("frontend:labeler_list")
    role = request.GET.get("role", "")
    users = list(user_list(role=role or None))
    return render(
        request,
        "frontend/labelers/list.html",
        {"form": form, "rows": _rows(users), "roles": Role.choices, "role_filter": role},
    )


@role_required(Role.ADMIN)
@require_POST
def labeler_update(request: HttpRequest, user_id: int) -> HttpResponse:
    """Change one person's role or status; htmx swaps in the updated table row."""
    user = user_list().filter(pk=user_id).first()
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    form = LabelerUpdateForm(request.POST)
    error = ""
    if form.is_valid():
        data = form.cleaned_data
        if data["status"] == LabelerStatus.ACTIVE:
            data["status_reason"] = ""
        try:
            user_update(
                user=user,
                role=data["role"] or None,
                status=data["status"] or None,
                status_reason=data["status_reason"] if data["status"] else None,
                actor=request.user,
            )
        except ApplicationError as exc:
            error = exc.message
    else:
        error = "; ".join(f"{field}: {', '.join(str(e) for e in errs)}" for field, errs in form.errors.items())
    context = {"row": _rows([user_list().get(pk=user_id)])[0], "error": error}
    if is_htmx(request):
        return render(request, "frontend/labelers/_row.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect("frontend:labeler_list")
