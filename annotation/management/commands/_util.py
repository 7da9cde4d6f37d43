from __future__ import annotations

from django.core.management.base import CommandError

from annotation.models import Project


def project_from_arg(value: str) -> Project:
    """A project by id or by exact name."""
    project = Project.objects.filter(pk=int(value)).first() if value.isdigit() else None
    project = project or Project.objects.filter(name=value).first()
    if project is None:
        raise CommandError(f"project: no project with id or name {value!r}.")
    return project
