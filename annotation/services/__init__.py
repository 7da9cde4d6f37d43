"""Writes of the annotation app. Each function owns one write and its invariants."""

from annotation.services.imports import ImportSummary, prompts_import, response_sets_build, response_sets_create
from annotation.services.leasing import assignment_lease_next, assignment_skip, leases_expire
from annotation.services.projects import (
    guideline_acknowledge,
    guideline_publish,
    project_create,
    project_update,
)
from annotation.services.ranking import ranking_submit, ranking_submit_input

__all__ = [
    "ImportSummary",
    "assignment_lease_next",
    "assignment_skip",
    "guideline_acknowledge",
    "guideline_publish",
    "leases_expire",
    "project_create",
    "project_update",
    "prompts_import",
    "ranking_submit",
    "ranking_submit_input",
    "response_sets_build",
    "response_sets_create",
]
