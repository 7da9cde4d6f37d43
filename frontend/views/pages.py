"""Pages that frame the others: log out and the places the next pages will fill."""

from __future__ import annotations

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from frontend.views.common import role_required
from labelers.models import Role


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")


@role_required(Role.ADMIN, Role.ML_ENGINEER)
def coming(request: HttpRequest, section: str) -> HttpResponse:
    titles = {"quality": "Quality (agreement)", "training": "Training runs"}
    return render(request, "frontend/coming.html", {"title": titles.get(section, section), "section": section})
