"""Everything the agreement report reads from the database, in one place.

The comparisons and rankings come in bulk as arrays (PostgreSQL streams them with COPY); table
names come from the models. Nothing here computes a figure: that is ``quality.agreement``,
``quality.consensus`` and ``quality.labeler_figures``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from django.contrib.auth import get_user_model
from django.db import connection

from annotation import rules
from annotation.models import Comparison, Guideline, Project, Ranking, ResponseSet
from annotation.selectors import preference_sets
from quality.arrays import Labels, RankingMeta
from quality.models import LabelerQuality

_COLUMNS = ("set_id", "a", "b", "code", "labeler", "ranking", "version", "day")
_SELECT = f"""
    SELECT c.response_set_id, c.response_a_id, c.response_b_id, {rules.sql_outcome_code("c.outcome")},
           c.labeler_id, c.ranking_id, COALESCE(g.version, 0), {{day}}
    FROM {Comparison._meta.db_table} c
    JOIN {ResponseSet._meta.db_table} s ON s.id = c.response_set_id
    JOIN {Ranking._meta.db_table} r ON r.id = c.ranking_id
    LEFT JOIN {Guideline._meta.db_table} g ON g.id = r.guideline_id
    WHERE s.project_id = %s AND {rules.sql_preference_set("s.evaluation_id")}
"""


def load_labels(project_id: int) -> Labels:
    """Every comparison of the project that is preference data as arrays. PostgreSQL streams it with COPY."""
    if connection.vendor == "postgresql":
        sql = _SELECT.format(day="(c.created_at AT TIME ZONE 'UTC')::date - DATE '1970-01-01'")
        query = sql.replace("%s", str(int(project_id)))  # an int: nothing to quote
        buffer = io.BytesIO()
        with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
            for block in copy:
                buffer.write(block)
        buffer.seek(0)
        if buffer.getbuffer().nbytes == 0:
            data = np.zeros((0, len(_COLUMNS)), dtype=np.int64)
        else:
            import pandas as pd  # only here, on PostgreSQL: a heavy import no web request needs

            data = pd.read_csv(buffer, header=None, dtype=np.int64).to_numpy()
    else:
        sql = _SELECT.format(day="CAST(julianday(date(c.created_at)) - 2440587.5 AS INTEGER)")
        with connection.cursor() as cursor:
            cursor.execute(sql, [project_id])
            data = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, len(_COLUMNS))
    return Labels(**{name: np.ascontiguousarray(data[:, i]) for i, name in enumerate(_COLUMNS)})


def load_ranking_meta(project: Project) -> RankingMeta:
    """Every ranking of the project: who, how long, which prompt, and the order it was shown in."""
    k = project.k
    if connection.vendor == "postgresql":
        # Plain integers, the display order unpacked by the server: no JSON decoding per row here.
        order = ", ".join(f"CAST(r.display_order->>{i} AS bigint)" for i in range(k))
        sql = (
            f"SELECT r.id, r.labeler_id, r.time_spent_ms, s.prompt_id, {order} FROM {Ranking._meta.db_table} r "
            f"JOIN {ResponseSet._meta.db_table} s ON s.id = r.response_set_id "
            f"WHERE s.project_id = %s AND {rules.sql_preference_set('s.evaluation_id')} ORDER BY r.id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [project.pk])
            data = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 4 + k)
        return RankingMeta(
            ranking=data[:, 0].copy(),
            labeler=data[:, 1].copy(),
            time_ms=data[:, 2].copy(),
            prompt=data[:, 3].copy(),
            display=np.ascontiguousarray(data[:, 4:]),
        )
    rows = list(
        Ranking.objects.filter(response_set__in=preference_sets(project=project))
        .order_by("id")
        .values_list("id", "labeler_id", "time_spent_ms", "response_set__prompt_id", "display_order")
        .iterator(chunk_size=20000)
    )
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return RankingMeta(empty, empty, empty, empty, np.zeros((0, k), dtype=np.int64))
    ids, labelers, times, prompts, display = zip(*rows, strict=True)
    return RankingMeta(
        ranking=np.array(ids, dtype=np.int64),
        labeler=np.array(labelers, dtype=np.int64),
        time_ms=np.array(times, dtype=np.int64),
        prompt=np.array(prompts, dtype=np.int64),
        display=np.array([[int(x) for x in order] for order in display], dtype=np.int64).reshape(-1, k),
    )


def load_usernames(labeler_ids: list[int]) -> dict[int, str]:
    """Each labeler's username, for the report's tables."""
    return dict(get_user_model().objects.filter(pk__in=labeler_ids).values_list("pk", "username"))


def load_set_tags(project: Project) -> dict[int, list[str]]:
    """The tags of each set's prompt (sets without tags left out)."""
    return {
        set_id: tags
        for set_id, tags in preference_sets(project=project)
        .values_list("id", "prompt__tags")
        .iterator(chunk_size=10000)
        if tags
    }


def load_gold_standing(project: Project) -> dict[int, dict[str, Any]]:
    """Each labeler's stored gold figures and qualification on the project (kept by ranking, not
    by the refresh)."""
    return {
        row["labeler_id"]: dict(row)
        for row in LabelerQuality.objects.filter(project=project).values(
            "labeler_id", "gold_items", "gold_pairs", "gold_pairs_agreed", "qualification"
        )
    }
