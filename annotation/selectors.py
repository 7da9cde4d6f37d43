"""Reads of the annotation app, with their access rules and query shapes."""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from annotation.models import (
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonOutcome,
    Guideline,
    GuidelineAcknowledgement,
    Project,
    Prompt,
    Ranking,
    Response,
    ResponseSet,
    ResponseSetStatus,
)
from config import db
from config.exceptions import NotFound
from labelers.models import Role
from labelers.selectors import user_role
from labelers.types import AuthUser


def preference_sets(*, project: Project) -> QuerySet[ResponseSet]:
    """The sets whose rankings are preference data (reward-model training, the export, the retrain
    schedule, the agreement report and labeler figures): all of a project's but those of human
    evaluations, which judge models and never train them (``rules.sql_preference_set`` in SQL)."""
    return ResponseSet.objects.filter(project=project, evaluation__isnull=True)


def preference_comparisons(*, project: Project) -> QuerySet[Comparison]:
    """The comparisons of ``preference_sets``."""
    return Comparison.objects.filter(response_set__in=preference_sets(project=project))


def project_list(*, active_only: bool = False) -> QuerySet[Project]:
    qs = Project.objects.select_related("current_guideline").order_by("id")
    return qs.filter(is_active=True) if active_only else qs


@cache
def _project_sql() -> str:
    return (
        f"SELECT {db.columns(Project, 'p')}, {db.columns(Guideline, 'g')} FROM {db.table(Project)} p "
        f"LEFT JOIN {db.table(Guideline)} g ON g.id = p.current_guideline_id WHERE p.id = %s"
    )


def project_get(*, project_id: int) -> Project:
    """The project with its current guideline (one statement: every lease reads it)."""
    if not db.fits_id(project_id):
        raise NotFound(f"Project {project_id} not found.")
    row = db.fetch_one(_project_sql(), [project_id])
    if row is None:
        raise NotFound(f"Project {project_id} not found.")
    project, end = db.instance(Project, row)
    if project.current_guideline_id is not None:
        project.current_guideline, _ = db.instance(Guideline, row, end)
    return project


def project_get_visible(*, project_id: int, user: AuthUser) -> Project:
    """``project_get`` under the rule of who may see it: labelers see active projects only, and an
    inactive one is not found for them, with everything under it (its guidelines among them)."""
    project = project_get(project_id=project_id)
    if not project.is_active and user_role(user=user) == Role.LABELER:
        raise NotFound(f"Project {project_id} not found.")
    return project


def guideline_list(*, project: Project) -> QuerySet[Guideline]:
    return project.guidelines.select_related("published_by").order_by("-version")


def guideline_get(*, project: Project, version: int) -> Guideline:
    guideline = project.guidelines.filter(version=version).first()
    if guideline is None:
        raise NotFound(f"Guideline version {version} of project {project.pk} not found.")
    return guideline


def guideline_needs_ack(*, project: Project, user: AuthUser) -> Guideline | None:
    """The current guideline when ``user`` has not acknowledged it yet, else ``None``."""
    guideline = project.current_guideline
    if guideline is None:
        return None
    acked = GuidelineAcknowledgement.objects.filter(guideline=guideline, user=user).exists()
    return None if acked else guideline


def prompt_list(*, project: Project, split: str | None = None) -> QuerySet[Prompt]:
    qs = project.prompts.annotate(n_responses=Count("responses")).order_by("id")
    return qs.filter(split=split) if split else qs


def response_set_list(*, project: Project, status: str | None = None) -> QuerySet[ResponseSet]:
    qs = project.response_sets.select_related("prompt").order_by("id")
    return qs.filter(status=status) if status else qs


def assignment_list(*, labeler: AuthUser, project: Project | None = None) -> QuerySet[Assignment]:
    """A labeler's own assignments, newest first."""
    qs = Assignment.objects.filter(labeler=labeler).select_related("response_set").order_by("-leased_at", "-id")
    return qs.filter(response_set__project=project) if project is not None else qs


def assignment_get(*, assignment_id: int, labeler: AuthUser) -> Assignment:
    """One of the labeler's own assignments; someone else's is reported as not found."""
    assignment = (
        Assignment.objects.select_related("response_set__prompt", "response_set__project", "guideline")
        .filter(pk=assignment_id, labeler=labeler)
        .first()
    )
    if assignment is None:
        raise NotFound(f"Assignment {assignment_id} not found.")
    return assignment


def assignment_responses(*, assignment: Assignment) -> list[Response]:
    """The set's responses in this assignment's display order."""
    if assignment.shown_responses is not None:
        return assignment.shown_responses
    by_id = Response.objects.in_bulk([int(pk) for pk in assignment.display_order])
    return [by_id[int(pk)] for pk in assignment.display_order]


def ranking_list(*, project: Project) -> QuerySet[Ranking]:
    return Ranking.objects.filter(response_set__project=project).select_related("labeler", "guideline").order_by("id")


def comparison_list(*, project: Project) -> QuerySet[Comparison]:
    return Comparison.objects.filter(response_set__project=project).select_related("labeler").order_by("id")


def project_stats(*, project: Project) -> dict[str, Any]:
    """Counts that admins and ML engineers watch: prompts, sets by status, rankings, comparisons."""
    now = timezone.now()
    sets = project.response_sets.aggregate(
        total=Count("id"),
        open=Count("id", filter=Q(status=ResponseSetStatus.OPEN)),
        complete=Count("id", filter=Q(status=ResponseSetStatus.COMPLETE)),
    )
    comparisons = Comparison.objects.filter(response_set__project=project).aggregate(
        total=Count("id"), ties=Count("id", filter=Q(outcome=ComparisonOutcome.TIE))
    )
    assignments = Assignment.objects.filter(response_set__project=project).aggregate(
        active_leases=Count("id", filter=Q(status=AssignmentStatus.LEASED, expires_at__gt=now)),
        skipped=Count("id", filter=Q(status=AssignmentStatus.SKIPPED)),
    )
    return {
        "prompts": project.prompts.count(),
        "response_sets": sets,
        "rankings": Ranking.objects.filter(response_set__project=project).count(),
        "comparisons": comparisons,
        "active_leases": assignments["active_leases"],
        "skipped": assignments["skipped"],
        "labelers": Ranking.objects.filter(response_set__project=project).values("labeler").distinct().count(),
    }


def labeler_progress(*, project: Project, labeler: AuthUser) -> dict[str, int]:
    """What a labeler may see about their own work: done today, done in total, left for them."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    mine = Assignment.objects.filter(labeler=labeler, response_set__project=project)
    left = (
        project.response_sets.filter(status=ResponseSetStatus.OPEN)
        .exclude(
            assignments__labeler=labeler, assignments__status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED]
        )
        .count()
    )
    return {
        "done_today": mine.filter(status=AssignmentStatus.SUBMITTED, finished_at__gte=today).count(),
        "done_total": mine.filter(status=AssignmentStatus.SUBMITTED).count(),
        "left": left,
    }


def _median(values: list[int]) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2


def project_throughput(*, project: Project, days: int = 14) -> dict[str, Any]:
    """Items per labeler per day over the last ``days`` days and the median time per item (ms)."""
    since = (timezone.now() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = Ranking.objects.filter(response_set__project=project, created_at__gte=since).values_list(
        "labeler__username", "created_at", "time_spent_ms"
    )
    per_day: dict[tuple[str, Any], list[int]] = {}
    per_labeler: dict[str, list[int]] = {}
    all_times: list[int] = []
    for username, created_at, time_spent_ms in rows:
        day = timezone.localtime(created_at).date()
        per_day.setdefault((username, day), []).append(time_spent_ms)
        per_labeler.setdefault(username, []).append(time_spent_ms)
        all_times.append(time_spent_ms)
    return {
        "since": since.date(),
        "days": sorted(
            (
                {"labeler": username, "day": day, "items": len(times), "median_ms": _median(times)}
                for (username, day), times in per_day.items()
            ),
            key=lambda row: (row["day"], row["labeler"]),
            reverse=True,
        ),
        "labelers": [
            {"labeler": username, "items": len(times), "median_ms": _median(times)}
            for username, times in sorted(per_labeler.items())
        ],
        "items": len(all_times),
        "median_ms": _median(all_times),
    }


def labeler_activity(*, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per user: items submitted (today and in total), skipped, and median time per item (ms)."""
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    counts = (
        Assignment.objects.filter(labeler_id__in=user_ids)
        .values("labeler_id")
        .annotate(
            submitted=Count("id", filter=Q(status=AssignmentStatus.SUBMITTED)),
            submitted_today=Count("id", filter=Q(status=AssignmentStatus.SUBMITTED, finished_at__gte=today)),
            skipped=Count("id", filter=Q(status=AssignmentStatus.SKIPPED)),
        )
    )
    activity: dict[int, dict[str, Any]] = {
        user_id: {"submitted": 0, "submitted_today": 0, "skipped": 0, "median_ms": None} for user_id in user_ids
    }
    for row in counts:
        activity[row["labeler_id"]].update(
            submitted=row["submitted"], submitted_today=row["submitted_today"], skipped=row["skipped"]
        )
    times: dict[int, list[int]] = {}
    for labeler_id, time_spent_ms in Ranking.objects.filter(labeler_id__in=user_ids).values_list(
        "labeler_id", "time_spent_ms"
    ):
        times.setdefault(labeler_id, []).append(time_spent_ms)
    for labeler_id, values in times.items():
        activity[labeler_id]["median_ms"] = _median(values)
    return activity
