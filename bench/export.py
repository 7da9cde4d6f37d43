"""Speed and memory of the trl JSONL preference export over 1,000,000 comparisons, on PostgreSQL.

What it measures: ``annotation.export.preferences_export_jsonl(project=..., mode=...)`` writing
every line to a file, for ``mode="annotator"`` (one row per comparison) and ``mode="majority"``
(one row per pair). Each export runs in a fresh child process, so the figures are the export's
own: wall seconds, rows/s, MB written, and peak RSS (``ru_maxrss``) next to the RSS the process
had after loading Django.

Target (issue): 1,000,000 comparisons exported in under 30 s with under 500 MB peak memory.

Setup: creates database ``bench_export`` (dropped at the end unless ``--keep-db``), runs
migrations and seeds with set-based SQL: K=5 (10 comparisons per ranking), overlap 3, so
``--comparisons 1000000`` is 100,000 rankings over 33,334 response sets; prompts of ~200
characters and responses of ~400, random dense rankings with ties.

    .venv/bin/python bench/export.py [--comparisons 1000000] [--keep-db]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PYTHON, ROOT, bench_env, database_create, database_drop, django_setup, migrate, ratio

K = 5
OVERLAP = 3
PAIRS = K * (K - 1) // 2
TARGET_SECONDS = 30.0
TARGET_PEAK_MB = 500.0
MODES = ("annotator", "majority")

_TEXT = (
    "the model answer explains why this result holds because the data shows a clear trend over time and "
    "people often ask whether it will change; a careful reply should cite sources, note uncertainty, "
    'avoid "made up" numbers, and suggest next steps such as checking the café\'s opening hours or the '
    "user's own notes before acting on it"
)
_WORDS = _TEXT.split()


def _sentences(count: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(14, 22))).capitalize() + "." for _ in range(count)]


def _seed(*, comparisons: int, labelers: int) -> tuple[int, dict[str, float]]:
    """Seed one project with ``comparisons`` comparisons in set-based SQL; return (project id, timings)."""
    from django.db import connection, transaction

    from annotation.services import project_create
    from labelers.models import Role
    from labelers.services import user_create

    rankings = comparisons // PAIRS
    n_sets = -(-rankings // OVERLAP)
    timings: dict[str, float] = {}
    admin = user_create(username="bench-admin", password=None, role=Role.ADMIN)
    project = project_create(created_by=admin, name="bench-export", k=K, overlap=OVERLAP, guideline="Rank them.")
    project.refresh_from_db()
    labeler_ids = [
        user_create(username=f"labeler-{i:03d}", password=None, role=Role.LABELER).pk for i in range(labelers)
    ]
    rng = random.Random(0)
    pool = _sentences(256, rng)  # sentences of ~100 characters
    params = {"project": project.pk, "guideline": project.current_guideline_id, "pool": pool, "labelers": labeler_ids}
    # The 1 + (hash & 255) picks are deterministic per row, so reruns seed identical text.
    steps = {
        "prompts": """
            INSERT INTO annotation_prompt (project_id, external_id, text, messages, split, tags, metadata, created_at)
            SELECT %(project)s, 'p' || i,
                   (%(pool)s::text[])[1 + (hashint4(i) & 255)] || ' ' || (%(pool)s::text[])[1 + (hashint4(-i) & 255)],
                   NULL, CASE WHEN i %% 10 = 0 THEN 'val' ELSE 'train' END, '["bench"]'::jsonb, '{}'::jsonb, now()
            FROM generate_series(1, %(sets)s) AS i""",
        "responses": """
            INSERT INTO annotation_response (prompt_id, text, origin, model_version_id, sampling, created_at)
            SELECT p.id,
                   (SELECT string_agg((%(pool)s::text[])[1 + (hashint4((p.id * 64 + j * 8 + g)::int) & 255)], ' ')
                    FROM generate_series(1, 4) AS g),
                   'import', NULL, '{}'::jsonb, now()
            FROM annotation_prompt p CROSS JOIN generate_series(1, %(k)s) AS j
            WHERE p.project_id = %(project)s ORDER BY p.id, j""",
        "response sets": """
            INSERT INTO annotation_responseset
                (project_id, prompt_id, status, required_count, submitted_count, created_at, completed_at)
            SELECT %(project)s, p.id, 'complete', %(overlap)s, 0, now(), now()
            FROM annotation_prompt p WHERE p.project_id = %(project)s ORDER BY p.id""",
        "items": """
            INSERT INTO annotation_responsesetitem (response_set_id, response_id, position)
            SELECT s.id, r.id, row_number() OVER (PARTITION BY s.id ORDER BY r.id) - 1
            FROM annotation_responseset s JOIN annotation_response r ON r.prompt_id = s.prompt_id
            WHERE s.project_id = %(project)s""",
        "assignments": """
            INSERT INTO annotation_assignment (response_set_id, labeler_id, status, display_order, guideline_id,
                                               leased_at, expires_at, finished_at, skip_reason)
            SELECT s.id, (%(labelers)s::bigint[])[1 + (s.n * %(overlap)s + j) %% cardinality(%(labelers)s::bigint[])],
                   'submitted',
                   (SELECT jsonb_agg(i.response_id ORDER BY i.position) FROM annotation_responsesetitem i
                    WHERE i.response_set_id = s.id),
                   %(guideline)s, now() - interval '1 hour', now() + interval '1 hour', now(), ''
            FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM annotation_responseset
                  WHERE project_id = %(project)s) AS s
            CROSS JOIN generate_series(0, %(overlap)s - 1) AS j
            WHERE s.n * %(overlap)s + j < %(rankings)s""",
        # Random dense ranks with ties: dense_rank over a random score in 1..K.
        "ranks": """
            CREATE TEMP TABLE bench_ranks ON COMMIT DROP AS
            SELECT a.id AS assignment_id, i.response_id,
                   dense_rank() OVER (PARTITION BY a.id ORDER BY 1 + floor(random() * %(k)s)) AS rank
            FROM annotation_assignment a JOIN annotation_responsesetitem i ON i.response_set_id = a.response_set_id
            JOIN annotation_responseset s ON s.id = a.response_set_id WHERE s.project_id = %(project)s""",
        "rankings": """
            INSERT INTO annotation_ranking (assignment_id, response_set_id, labeler_id, guideline_id, ranks,
                display_order, pairwise_choice, scores, flags, comment, time_spent_ms, idempotency_key,
                submitted_late, created_at)
            SELECT a.id, a.response_set_id, a.labeler_id, a.guideline_id, r.ranks, a.display_order, '',
                   '{}'::jsonb, '{}'::jsonb, '', 20000, md5(a.id::text), false, now()
            FROM annotation_assignment a
            JOIN (SELECT assignment_id, jsonb_object_agg(response_id::text, rank) AS ranks
                  FROM bench_ranks GROUP BY assignment_id) r ON r.assignment_id = a.id""",
        "comparisons": """
            INSERT INTO annotation_comparison (ranking_id, response_set_id, labeler_id, response_a_id, response_b_id,
                                               outcome, margin, both_bad, created_at)
            SELECT rk.id, rk.response_set_id, rk.labeler_id, x.response_id, y.response_id,
                   CASE WHEN x.rank < y.rank THEN 'a' WHEN x.rank > y.rank THEN 'b' ELSE 'tie' END,
                   abs(x.rank - y.rank), false, now()
            FROM annotation_ranking rk
            JOIN bench_ranks x ON x.assignment_id = rk.assignment_id
            JOIN bench_ranks y ON y.assignment_id = rk.assignment_id AND x.response_id < y.response_id""",
        "set counts": """
            UPDATE annotation_responseset s SET submitted_count = c.n,
                   status = CASE WHEN c.n >= s.required_count THEN 'complete' ELSE 'open' END
            FROM (SELECT response_set_id, count(*) AS n FROM annotation_ranking GROUP BY 1) c
            WHERE c.response_set_id = s.id""",
    }
    params.update(sets=n_sets, k=K, overlap=OVERLAP, rankings=rankings)
    for name, sql in steps.items():
        steps[name] = _with_model_defaults(sql, params)
    with transaction.atomic(), connection.cursor() as cursor:
        # The rows are consistent by construction: skip the per-row foreign-key triggers (needs superuser).
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        for name, sql in steps.items():
            started = time.perf_counter()
            cursor.execute(sql, params)
            timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return project.pk, timings


def _with_model_defaults(sql: str, params: dict[str, Any]) -> str:
    """Give an ``INSERT ... SELECT`` every column it leaves out, at the model field's default.

    Django keeps defaults in Python, not in the schema: a field added later (with a default) would
    otherwise fail this raw SQL with a NOT NULL violation."""
    from django.apps import apps
    from django.db import connection

    match = re.match(r"\s*INSERT INTO (\w+)\s*\(([^)]*)\)\s*(SELECT.*)", sql, re.DOTALL)
    if match is None:
        return sql
    table, columns, select = match.groups()
    given = {column.strip() for column in columns.split(",")}
    model = next(model for model in apps.get_models() if model._meta.db_table == table)
    extra = []
    for field in model._meta.concrete_fields:
        if field.primary_key or field.column in given:
            continue
        if not field.has_default() and not field.null:
            raise SystemExit(f"{table}.{field.column}: NOT NULL without a default; add it to the seeding SQL")
        key = f"default_{table}_{field.column}"
        params[key] = field.get_db_prep_save(field.get_default() if field.has_default() else None, connection)
        extra.append((field.column, key))
    if not extra:
        return sql
    names = "".join(f', "{column}"' for column, _ in extra)
    values = "".join(f", %({key})s" for _, key in extra)
    return f"INSERT INTO {table} ({columns}{names}) SELECT seeded.*{values} FROM ({select}) AS seeded"


def _child(db_name: str, project_id: int, mode: str, out: Path) -> None:
    """Run one export in this (fresh) process and print its figures as one JSON line."""
    django_setup(db_name)
    from annotation.export import preferences_export_jsonl
    from annotation.models import Project

    project = Project.objects.get(pk=project_id)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = 0
    started = time.perf_counter()
    with out.open("w", encoding="utf-8") as handle:
        for line in preferences_export_jsonl(project=project, mode=mode):
            handle.write(line)
            rows += 1
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "mode": mode,
                "rows": rows,
                "seconds": seconds,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "bytes": out.stat().st_size,
                "baseline_mb": baseline_kb / 1024,
                "peak_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            }
        )
    )


def _run_child(db_name: str, project_id: int, mode: str, out: Path) -> dict:
    command = [PYTHON, __file__, "--child", mode, "--project-id", str(project_id), "--out", str(out)]
    command += ["--db-name", db_name]
    result = subprocess.run(command, cwd=ROOT, env=bench_env(db_name), capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"export child failed ({mode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _count(project_id: int) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM annotation_ranking r JOIN annotation_responseset s "
            "ON s.id = r.response_set_id WHERE s.project_id = %(p)s), "
            "(SELECT count(*) FROM annotation_comparison c JOIN annotation_responseset s "
            "ON s.id = c.response_set_id WHERE s.project_id = %(p)s), "
            "(SELECT count(*) FROM (SELECT DISTINCT response_set_id, response_a_id, response_b_id "
            "FROM annotation_comparison) d), "
            "(SELECT count(*) FROM annotation_comparison WHERE outcome = 'tie')",
            {"p": project_id},
        )
        rankings, comparisons, pairs, ties = cursor.fetchone()
    return {"rankings": rankings, "comparisons": comparisons, "pairs": pairs, "ties": ties}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=1_000_000, help=f"comparisons to seed ({PAIRS} per ranking)")
    parser.add_argument("--labelers", type=int, default=60, help="labelers the rankings are spread over")
    parser.add_argument("--modes", default=",".join(MODES), help="export modes to time, comma-separated")
    parser.add_argument("--db-name", default="bench_export")
    parser.add_argument("--keep-db", action="store_true", help="leave the database (and reuse it with --reuse-db)")
    parser.add_argument("--reuse-db", action="store_true", help="skip seeding; export the project a kept run left")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--project-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.db_name, args.project_id, args.child, args.out)
        return 0

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    keep = args.keep_db or args.reuse_db
    try:
        if args.reuse_db:
            django_setup(args.db_name)
            from annotation.models import Project

            project_id = Project.objects.get(name="bench-export").pk
        else:
            database_create(args.db_name)
            migrate_s = migrate(args.db_name)
            django_setup(args.db_name)
            started = time.perf_counter()
            project_id, timings = _seed(comparisons=args.comparisons, labelers=args.labelers)
            seed_s = time.perf_counter() - started
            steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
            print(f"setup: migrate {migrate_s:.1f} s; seed {seed_s:.1f} s ({steps})")
        counts = _count(project_id)
        print(
            f"data: {counts['rankings']} rankings, {counts['comparisons']} comparisons "
            f"({counts['ties']} ties), {counts['pairs']} distinct pairs; K={K}, overlap {OVERLAP}"
        )
        from django.db import connections

        connections.close_all()
        results = []
        with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
            for mode in args.modes.split(","):
                results.append(_run_child(args.db_name, project_id, mode, Path(folder) / f"{mode}.jsonl"))
        print()
        print(f"export: preferences_export_jsonl to a file, fresh process per mode, {os.cpu_count()} cores")
        # The time target is 1,000,000 comparisons in 30 s: 33,333 comparisons/s, whatever --comparisons is.
        target_rate = 1_000_000 / TARGET_SECONDS
        header = f"  {'mode':<10}{'rows':>10}{'seconds':>9}{'rows/s':>10}{'cmp/s':>9}{'CPU s':>7}{'MB out':>8}"
        print(header + f"{'RSS base MB':>13}{'peak MB':>9}  vs targets (33,333 cmp/s, 500 MB)")
        for result in results:
            print(
                f"  {result['mode']:<10}{result['rows']:>10}{result['seconds']:>9.1f}"
                f"{result['rows'] / result['seconds']:>10.0f}{counts['comparisons'] / result['seconds']:>9.0f}"
                f"{result['cpu_seconds']:>7.1f}{result['bytes'] / 1e6:>8.0f}{result['baseline_mb']:>13.0f}"
                f"{result['peak_mb']:>9.0f}  time {ratio(counts['comparisons'] / result['seconds'], target_rate)}, "
                f"memory {ratio(result['peak_mb'], TARGET_PEAK_MB, lower_is_better=True)}"
            )
        annotator = next((r for r in results if r["mode"] == "annotator"), None)
        if annotator is not None:
            meets = (
                annotator["seconds"] < TARGET_SECONDS * counts["comparisons"] / 1_000_000
                and annotator["peak_mb"] < TARGET_PEAK_MB
            )
            print(
                f"  target (annotator mode, {annotator['rows']} rows in {annotator['seconds']:.1f} s < 30 s "
                f"and {annotator['peak_mb']:.0f} MB < 500 MB peak): "
                f"{'met' if meets else 'NOT met'}; rows == comparisons: {annotator['rows'] == counts['comparisons']}"
            )
        return 0
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        if keep:
            print(f"kept database {args.db_name}")
        else:
            database_drop(args.db_name)


if __name__ == "__main__":
    sys.exit(main())
