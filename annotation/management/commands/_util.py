from __future__ import annotations

from django.core.management.base import CommandError

from annotation.models import Project
from annotation.params import parse_id


def project_from_arg(value: str) -> Project:
    """A project by id or by exact name."""
    project_id = parse_id(value)
    project = Project.objects.filter(pk=project_id).first() if project_id is not None else None
    project = project or Project.objects.filter(name=value).first()
    if project is None:
        raise CommandError(f"project: no project with id or name {value!r}.")
    return project
