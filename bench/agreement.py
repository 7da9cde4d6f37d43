"""Speed, memory and labeler-noise recovery of the agreement report over 1,000,000 comparisons, on PostgreSQL.

What it measures, each in a fresh child process (so the seeding's memory does not count):

1. ``quality.report.project_quality(project=..., bootstrap=1000)``: the COPY load of every
   comparison, the agreement report, the Bradley-Terry consensus of every set and every labeler's
   figures (one-coin Dawid-Skene reliability included). Wall seconds, CPU seconds, peak RSS
   (``ru_maxrss``) next to the RSS the process had after loading Django.
2. ``quality.services.agreement_report_refresh(project=..., force=True)``: the same plus
   its writes (consensus rows, LabelerQuality rows, review flags, the stored report), with
   ``QUALITY_BOOTSTRAP_RESAMPLES=1000``.

Then how well the fitted reliability recovers the planted labeler noise: Spearman correlation over
labelers between ``LabelerQuality.reliability`` (stored by the refresh) and minus the planted noise
scale, and between it and each labeler's realised accuracy against the planted utilities.

Targets (issue): the full report under 10 s and under 2 GiB peak RSS for 1,000,000 comparisons from
200 labelers; Spearman(reliability, -noise) above 0.9.

Synthetic data (Thurstone model): every response has a hidden utility ~ N(0, 1); every labeler a
noise scale drawn log-uniformly from [0.1, 3.0]. A labeler sees utility + noise * N(0, 1) per
response and ranks the K=4 responses by it, with dense ranks; values within 0.05 of the next one
(after noise) share its rank. Overlap 3: each set is ranked by 3 distinct labelers drawn uniformly
from all of them. 55,556 sets x 3 rankings x C(4,2)=6 = 1,000,008 comparisons (``--sets``).
Real rows (prompts, responses, response sets and items, submitted assignments with a display order,
rankings with ranks / display order / time spent, comparisons) are written with COPY into database
``bench_agreement``, which is created, migrated and dropped at the end unless ``--keep-db``.

    .venv/bin/python bench/agreement.py [--sets 55556] [--labelers 200] [--seed 0] [--keep-db]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations, repeat
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PYTHON, ROOT, bench_env, database_create, database_drop, django_setup, migrate, ratio

DB_NAME = "bench_agreement"
PROJECT_NAME = "bench-agreement"
K = 4
OVERLAP = 3
PAIRS = list(combinations(range(K), 2))
NOISE_RANGE = (0.1, 3.0)  # labeler noise scale, log-uniform
TIE_EPSILON = 0.05  # perceived utilities closer than this to the next one share its rank
BOOTSTRAP = 1000
TARGET_SECONDS = 10.0
TARGET_PEAK_MB = 2048.0  # 2 GiB, in MiB as ru_maxrss / 1024
TARGET_SPEARMAN = 0.9
CHUNK_ROWS = 100_000


@dataclass
class Plan:
    """Everything planted, by position: set s, its j-th labeler, response i of the set."""

    noise: np.ndarray  # (labelers,) noise scale
    utility: np.ndarray  # (sets, K) hidden utility of each response
    labeler: np.ndarray  # (sets, OVERLAP) labeler index
    ranks: np.ndarray  # (sets, OVERLAP, K) dense ranks, 1 best
    display: np.ndarray  # (sets, OVERLAP, K) response positions in the order shown
    time_ms: np.ndarray  # (sets, OVERLAP)

    def comparisons(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per (set, labeler slot, pair): code (+1 a, 0 tie, -1 b), margin, planted truth (+1/-1), labeler."""
        i = np.array([p[0] for p in PAIRS])
        j = np.array([p[1] for p in PAIRS])
        ri, rj = self.ranks[:, :, i], self.ranks[:, :, j]  # (sets, OVERLAP, pairs)
        code = np.sign(rj - ri)
        margin = np.abs(ri - rj)
        truth = np.sign(self.utility[:, i] - self.utility[:, j])[:, None, :]
        truth = np.broadcast_to(truth, code.shape)
        labeler = np.broadcast_to(self.labeler[:, :, None], code.shape)
        return code, margin, truth, labeler


def _plan(n_sets: int, n_labelers: int, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.uniform(np.log(NOISE_RANGE[0]), np.log(NOISE_RANGE[1]), n_labelers))
    utility = rng.standard_normal((n_sets, K))
    labeler = np.empty((n_sets, OVERLAP), dtype=np.int64)
    for start in range(0, n_sets, 10_000):  # 3 distinct labelers per set, uniformly
        stop = min(n_sets, start + 10_000)
        labeler[start:stop] = np.argsort(rng.random((stop - start, n_labelers)), axis=1)[:, :OVERLAP]
    perceived = utility[:, None, :] + noise[labeler][:, :, None] * rng.standard_normal((n_sets, OVERLAP, K))
    order = np.argsort(-perceived, axis=2)
    ordered = np.take_along_axis(perceived, order, axis=2)
    new_rank = (ordered[:, :, :-1] - ordered[:, :, 1:]) > TIE_EPSILON
    dense = 1 + np.concatenate([np.zeros((n_sets, OVERLAP, 1), dtype=np.int64), np.cumsum(new_rank, axis=2)], axis=2)
    ranks = np.empty_like(dense)
    np.put_along_axis(ranks, order, dense, axis=2)
    display = np.argsort(rng.random((n_sets, OVERLAP, K)), axis=2)
    time_ms = np.clip(20_000 * np.exp(0.6 * rng.standard_normal((n_sets, OVERLAP))), 1_500, 600_000).astype(np.int64)
    return Plan(noise=noise, utility=utility, labeler=labeler, ranks=ranks, display=display, time_ms=time_ms)


def _text(value: Any) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict | list):
        value = json.dumps(value)
    elif hasattr(value, "isoformat"):
        value = value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _copy(cursor: Any, model: Any, n: int, columns: dict[str, Any]) -> None:
    """COPY ``n`` rows into ``model``'s table. A column is a sequence of ``n`` values (numbers or
    already-escaped strings) or one constant; columns left out get the model field's default."""
    from django.utils import timezone

    now = timezone.now()
    given = dict(columns)
    for field in model._meta.concrete_fields:
        if field.column in given or field.primary_key:
            continue
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            given[field.column] = now
            continue
        value = field.get_default()  # "" for a text field without a default, else None
        if value is None and not field.null:
            raise SystemExit(f"{model._meta.db_table}.{field.column}: NOT NULL without a default; seed it")
        given[field.column] = value
    streams: list[Iterable[str]] = []
    for value in given.values():
        if isinstance(value, np.ndarray):
            streams.append(map(str, value.tolist()))
        elif isinstance(value, list):
            streams.append(value)
        else:
            streams.append(repeat(_text(value), n))
    names = ", ".join(f'"{name}"' for name in given)
    rows = zip(*streams, strict=False)
    with cursor.copy(f"COPY {model._meta.db_table} ({names}) FROM STDIN") as copy:
        while True:
            chunk = ["\t".join(row) for _, row in zip(range(CHUNK_ROWS), rows, strict=False)]
            if not chunk:
                break
            copy.write(("\n".join(chunk) + "\n").encode())


def _next_ids(cursor: Any, model: Any, n: int) -> np.ndarray:
    cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {model._meta.db_table}")
    return cursor.fetchone()[0] + 1 + np.arange(n, dtype=np.int64)


def _seed(plan: Plan, labeler_ids: np.ndarray) -> tuple[int, dict[str, float]]:
    """Write the plan as real rows with COPY; return (project id, seconds per table)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from annotation.models import (
        Assignment,
        Comparison,
        Project,
        Prompt,
        Ranking,
        Response,
        ResponseSet,
        ResponseSetItem,
    )
    from annotation.services import project_create
    from labelers.models import Role
    from labelers.services import user_create

    admin = user_create(username="bench-admin", password=None, role=Role.ADMIN)
    project: Project = project_create(
        created_by=admin, name=PROJECT_NAME, k=K, overlap=OVERLAP, guideline="Rank the responses, best first."
    )
    project.refresh_from_db()
    n_sets = plan.utility.shape[0]
    n_rankings = n_sets * OVERLAP
    now = timezone.now()
    timings: dict[str, float] = {}
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's, for COPY
        # The rows are consistent by construction: skip the per-row foreign-key triggers (needs superuser).
        cursor.execute("SET LOCAL session_replication_role = replica")

        def step(name: str, model: Any, n: int, columns: dict[str, Any]) -> None:
            started = time.perf_counter()
            _copy(cursor, model, n, columns)
            timings[name] = time.perf_counter() - started

        prompt_ids = _next_ids(cursor, Prompt, n_sets)
        step(
            "prompts",
            Prompt,
            n_sets,
            {
                "id": prompt_ids,
                "project_id": project.pk,
                "external_id": [f"p{i}" for i in range(n_sets)],
                "text": [f"Synthetic prompt {i}: explain the trade-offs of option {i % 97}." for i in range(n_sets)],
                "split": "train",
                "tags": [f'["bench", "topic-{i % 5}"]' for i in range(n_sets)],
            },
        )
        response_ids = _next_ids(cursor, Response, n_sets * K).reshape(n_sets, K)  # ascending within a set
        step(
            "responses",
            Response,
            n_sets * K,
            {
                "id": response_ids.reshape(-1),
                "prompt_id": np.repeat(prompt_ids, K),
                "text": [f"Response {j} to prompt {i}." for i in range(n_sets) for j in range(K)],
                "origin": "import",
            },
        )
        set_ids = _next_ids(cursor, ResponseSet, n_sets)
        step(
            "response sets",
            ResponseSet,
            n_sets,
            {
                "id": set_ids,
                "project_id": project.pk,
                "prompt_id": prompt_ids,
                "status": "complete",
                "required_count": OVERLAP,
                "submitted_count": OVERLAP,
                "completed_at": now,
            },
        )
        step(
            "items",
            ResponseSetItem,
            n_sets * K,
            {
                "id": _next_ids(cursor, ResponseSetItem, n_sets * K),
                "response_set_id": np.repeat(set_ids, K),
                "response_id": response_ids.reshape(-1),
                "position": np.tile(np.arange(K), n_sets),
            },
        )
        shown = np.take_along_axis(np.repeat(response_ids[:, None, :], OVERLAP, axis=1), plan.display, axis=2)
        display_json = [json.dumps(order) for order in shown.reshape(n_rankings, K).tolist()]
        rank_sets = np.repeat(set_ids, OVERLAP)
        rank_labelers = labeler_ids[plan.labeler.reshape(-1)]
        assignment_ids = _next_ids(cursor, Assignment, n_rankings)
        step(
            "assignments",
            Assignment,
            n_rankings,
            {
                "id": assignment_ids,
                "response_set_id": rank_sets,
                "labeler_id": rank_labelers,
                "status": "submitted",
                "display_order": display_json,
                "guideline_id": project.current_guideline_id,
                "leased_at": now,
                "expires_at": now,
                "finished_at": now,
            },
        )
        ranks_json = [
            json.dumps(dict(zip(map(str, ids), ranks, strict=True)))
            for ids, ranks in zip(
                np.repeat(response_ids, OVERLAP, axis=0).tolist(),
                plan.ranks.reshape(n_rankings, K).tolist(),
                strict=True,
            )
        ]
        ranking_ids = _next_ids(cursor, Ranking, n_rankings)
        step(
            "rankings",
            Ranking,
            n_rankings,
            {
                "id": ranking_ids,
                "assignment_id": assignment_ids,
                "response_set_id": rank_sets,
                "labeler_id": rank_labelers,
                "guideline_id": project.current_guideline_id,
                "ranks": ranks_json,
                "display_order": display_json,
                "time_spent_ms": plan.time_ms.reshape(-1),
                "idempotency_key": [f"bench-{r}" for r in ranking_ids.tolist()],
            },
        )
        code, margin, _, _ = plan.comparisons()
        n_comparisons = code.size
        a = np.array([p[0] for p in PAIRS])
        b = np.array([p[1] for p in PAIRS])
        step(
            "comparisons",
            Comparison,
            n_comparisons,
            {
                "id": _next_ids(cursor, Comparison, n_comparisons),
                "ranking_id": np.repeat(ranking_ids, len(PAIRS)),
                "response_set_id": np.repeat(set_ids, OVERLAP * len(PAIRS)),
                "labeler_id": np.repeat(rank_labelers, len(PAIRS)),
                "response_a_id": np.broadcast_to(response_ids[:, None, a], code.shape).reshape(-1),
                "response_b_id": np.broadcast_to(response_ids[:, None, b], code.shape).reshape(-1),
                "outcome": np.array(["b", "tie", "a"])[code.reshape(-1) + 1].tolist(),
                "margin": margin.reshape(-1),
                "both_bad": False,
            },
        )
        for model in (Prompt, Response, ResponseSet, ResponseSetItem, Assignment, Ranking, Comparison):
            table = model._meta.db_table
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    timings["vacuum analyze"] = time.perf_counter() - started
    return project.pk, timings


def _labelers_create(n: int) -> np.ndarray:
    from labelers.models import Role
    from labelers.services import user_create

    return np.array(
        [user_create(username=f"labeler-{i:04d}", password=None, role=Role.LABELER).pk for i in range(n)],
        dtype=np.int64,
    )


def _labelers_existing(n: int) -> np.ndarray:
    from django.contrib.auth import get_user_model

    ids = dict(get_user_model().objects.filter(username__startswith="labeler-").values_list("username", "pk"))
    return np.array([ids[f"labeler-{i:04d}"] for i in range(n)], dtype=np.int64)


def _child(kind: str, project_id: int) -> None:
    """Run ``project_quality`` or ``agreement_report_refresh`` in this (fresh) process; print one JSON line."""
    django_setup(DB_NAME)
    from annotation.models import Project
    from quality.report import project_quality
    from quality.services import agreement_report_refresh

    project = Project.objects.get(pk=project_id)
    # The report imports these on first use; a long-running worker pays that once, so it is timed apart.
    started = time.perf_counter()
    import krippendorff  # noqa: F401
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401
    import statsmodels.stats.inter_rater  # noqa: F401

    imports_s = time.perf_counter() - started
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if kind == "quality":
        result = project_quality(project=project, bootstrap=BOOTSTRAP)
        report = result.report
        reliability = {str(k): v["reliability"] for k, v in result.labelers.items()}
    else:
        stored = agreement_report_refresh(project=project, force=True)
        assert stored is not None
        report = stored.data
        reliability = {}
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    summary = {key: report.get(key) for key in ("n_comparisons", "n_rankings", "n_labelers", "n_sets")}
    summary.update(
        headline=report["headline"],
        load_seconds=report.get("load_seconds"),
        report_seconds=report.get("seconds"),
        low_agreement_count=report.get("low_agreement_count"),
    )
    out = {
        "kind": kind,
        "seconds": seconds,
        "imports_seconds": imports_s,
        "cpu_seconds": cpu,
        "baseline_mb": baseline_kb / 1024,
        "peak_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "report": summary,
        "reliability": reliability,
    }
    print(json.dumps(out))


def _run_child(kind: str, project_id: int) -> dict:
    command = [PYTHON, __file__, "--child", kind, "--project-id", str(project_id)]
    env = bench_env(DB_NAME, QUALITY_BOOTSTRAP_RESAMPLES=str(BOOTSTRAP), QUALITY_REFRESH_ON_SUBMIT="0")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def _consensus_recovery(project_id: int, plan: Plan) -> tuple[float, float, int]:
    """Against the planted utilities: share of pairs the stored consensus orders correctly (a tie
    counts half), and share of sets whose consensus top response is the planted best."""
    from quality.models import ResponseSetConsensus

    rows = ResponseSetConsensus.objects.filter(response_set__project_id=project_id, source="model").values_list(
        "response_set_id", "scores"
    )
    scores = dict(rows.iterator(chunk_size=20_000))
    ordered_ids = sorted(scores)
    if len(ordered_ids) != plan.utility.shape[0]:
        return float("nan"), float("nan"), len(ordered_ids)
    # Response ids ascend with the response's position in the set, as seeded.
    fitted = np.array([[v for _, v in sorted(((int(r), s) for r, s in scores[i].items()))] for i in ordered_ids])
    i = np.array([p[0] for p in PAIRS])
    j = np.array([p[1] for p in PAIRS])
    fitted_sign = np.sign(np.round(fitted[:, i] - fitted[:, j], 6))
    truth_sign = np.sign(plan.utility[:, i] - plan.utility[:, j])
    pair_acc = float(np.where(fitted_sign == 0, 0.5, fitted_sign == truth_sign).mean())
    top_acc = float((fitted.argmax(axis=1) == plan.utility.argmax(axis=1)).mean())
    return pair_acc, top_acc, len(ordered_ids)


def _fmt_ci(value: Any) -> str:
    return f"[{value[0]:.4f}, {value[1]:.4f}]" if value else "n/a"


def _print_headline(headline: dict[str, Any]) -> None:
    print("headline (from the report):")
    for key, figure in headline.items():
        extra = ", ".join(
            f"{name} {_fmt_ci(v) if name == 'ci95' else v}" for name, v in figure.items() if name != "value"
        )
        value = figure.get("value")
        print(f"  {key:<34}{'n/a' if value is None else f'{value:.4f}':>8}" + (f"  ({extra})" if extra else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets", type=int, default=55_556, help=f"response sets (x {OVERLAP * len(PAIRS)} comparisons)"
    )
    parser.add_argument("--labelers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the planted utilities, noise and rankings")
    parser.add_argument("--keep-db", action="store_true", help=f"leave database {DB_NAME} (reuse it with --reuse-db)")
    parser.add_argument("--reuse-db", action="store_true", help="skip seeding; measure the project a kept run left")
    parser.add_argument("--child", choices=("quality", "refresh"), help=argparse.SUPPRESS)
    parser.add_argument("--project-id", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.project_id)
        return 0
    if args.labelers < OVERLAP:
        parser.error(f"--labelers must be at least the overlap ({OVERLAP})")

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    keep = args.keep_db or args.reuse_db
    try:
        started = time.perf_counter()
        plan = _plan(args.sets, args.labelers, args.seed)
        plan_s = time.perf_counter() - started
        if args.reuse_db:
            django_setup(DB_NAME)
            from annotation.models import Project

            project_id = Project.objects.get(name=PROJECT_NAME).pk
            labeler_ids = _labelers_existing(args.labelers)
            print(f"setup: reused database {DB_NAME} (same --sets/--labelers/--seed as the run that kept it)")
        else:
            database_create(DB_NAME)
            migrate_s = migrate(DB_NAME)
            django_setup(DB_NAME)
            started = time.perf_counter()
            labeler_ids = _labelers_create(args.labelers)
            users_s = time.perf_counter() - started
            started = time.perf_counter()
            project_id, timings = _seed(plan, labeler_ids)
            seed_s = time.perf_counter() - started
            steps = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
            print(
                f"setup: migrate {migrate_s:.1f} s; plan {plan_s:.1f} s; {args.labelers} users {users_s:.1f} s; "
                f"COPY seed {seed_s:.1f} s ({steps})"
            )
        code, _, truth, lab = plan.comparisons()
        n_comparisons = code.size
        correct = np.bincount(lab.reshape(-1), weights=(code == truth).reshape(-1), minlength=args.labelers)
        accuracy = correct / np.bincount(lab.reshape(-1), minlength=args.labelers)
        print(
            f"data: {args.sets} sets x {OVERLAP} rankings x {len(PAIRS)} pairs = {n_comparisons} comparisons "
            f"({(code == 0).mean():.1%} ties) from {args.labelers} labelers; K={K}, overlap {OVERLAP}, seed {args.seed}"
        )
        print(
            f"planted: noise scale log-uniform [{NOISE_RANGE[0]}, {NOISE_RANGE[1]}], tie epsilon {TIE_EPSILON}; "
            f"labeler accuracy vs planted order min {accuracy.min():.3f} / median {np.median(accuracy):.3f} / "
            f"max {accuracy.max():.3f}"
        )
        from django.db import connections

        connections.close_all()
        quality = _run_child("quality", project_id)
        refresh = _run_child("refresh", project_id)

        print()
        print(f"timings: fresh child process each, bootstrap {BOOTSTRAP}, {os.cpu_count()} cores")
        print("  seconds: the call alone; imports: pandas, scipy.stats, statsmodels, krippendorff, which the report")
        print("  imports on first use and a long-running worker pays once; cold = both, as a fresh process pays it")
        header = f"  {'call':<38}{'seconds':>8}{'imports':>8}{'cold':>7}{'CPU s':>7}{'RSS base MB':>12}{'peak MB':>8}"
        print(header + "  vs targets (10 s, 2048 MB)")
        for name, result in (
            ("project_quality(bootstrap=1000)", quality),
            ("agreement_report_refresh(force=True)", refresh),
        ):
            cold = result["seconds"] + result["imports_seconds"]
            print(
                f"  {name:<38}{result['seconds']:>8.2f}{result['imports_seconds']:>8.2f}{cold:>7.2f}"
                f"{result['cpu_seconds']:>7.1f}{result['baseline_mb']:>12.0f}{result['peak_mb']:>8.0f}  "
                f"{result['seconds']:.2f} s ({result['seconds'] / TARGET_SECONDS:.2f}x the 10 s budget; cold "
                f"{cold / TARGET_SECONDS:.2f}x), {result['peak_mb']:.0f} MB ({result['peak_mb'] / TARGET_PEAK_MB:.2f}x "
                "the 2048 MB budget)"
            )
        summary = quality["report"]
        print(
            f"  inside project_quality: load (COPY + ranking meta) {summary['load_seconds']:.2f} s, "
            f"whole {summary['report_seconds']:.2f} s; report counts {summary['n_comparisons']} comparisons, "
            f"{summary['n_rankings']} rankings, {summary['n_sets']} sets, {summary['n_labelers']} labelers"
        )
        print()
        _print_headline(summary["headline"])
        print(f"  low-agreement sets (Kendall's W < 0.3)  {summary['low_agreement_count']}")

        django_setup(DB_NAME)
        from quality.models import LabelerQuality

        stored = dict(
            LabelerQuality.objects.filter(project_id=project_id).values_list("labeler_id", "reliability").iterator()
        )
        index_of = {int(pk): i for i, pk in enumerate(labeler_ids.tolist())}
        fitted_ids = [pk for pk, value in stored.items() if value is not None and pk in index_of]
        fitted = np.array([stored[pk] for pk in fitted_ids])
        planted_noise = plan.noise[[index_of[pk] for pk in fitted_ids]]
        planted_accuracy = accuracy[[index_of[pk] for pk in fitted_ids]]
        rho_noise = _spearman(fitted, -planted_noise)
        rho_accuracy = _spearman(fitted, planted_accuracy)
        in_memory = quality["reliability"]
        rho_child = _spearman(
            [in_memory[str(pk)] for pk in fitted_ids], -planted_noise
        )  # the same fit, from project_quality's labelers dict
        pair_acc, top_acc, n_consensus = _consensus_recovery(project_id, plan)
        print()
        print(f"recovery of the planted labeler noise ({len(fitted_ids)} labelers with a stored reliability):")
        meets_rho = rho_noise > TARGET_SPEARMAN
        print(
            f"  Spearman(LabelerQuality.reliability, -noise scale)       {rho_noise:.4f}  "
            f"({rho_noise / TARGET_SPEARMAN:.2f}x the 0.9 target)"
        )
        print(f"  Spearman(project_quality labelers reliability, -noise)   {rho_child:.4f}")
        print(f"  Spearman(reliability, realised accuracy vs planted order) {rho_accuracy:.4f}")
        print(
            f"  reliability min {fitted.min():.3f} / median {np.median(fitted):.3f} / max {fitted.max():.3f}; "
            f"mean |reliability - realised accuracy| {np.abs(fitted - planted_accuracy).mean():.3f}"
        )
        print(
            f"  stored consensus vs planted utilities ({n_consensus} sets): {pair_acc:.4f} of pairs ordered right, "
            f"{top_acc:.4f} of sets with the right best response"
        )
        meets_time = quality["seconds"] < TARGET_SECONDS
        meets_memory = quality["peak_mb"] < TARGET_PEAK_MB
        print()
        print(
            f"targets: report {quality['seconds']:.2f} s < 10 s {'met' if meets_time else 'NOT met'} "
            f"({ratio(quality['seconds'], TARGET_SECONDS, lower_is_better=True)} headroom); "
            f"peak {quality['peak_mb']:.0f} MB < 2048 MB {'met' if meets_memory else 'NOT met'}; "
            f"Spearman {rho_noise:.4f} > 0.9 {'met' if meets_rho else 'NOT met'}; "
            f"refresh with writes {refresh['seconds']:.2f} s "
            f"{'within' if refresh['seconds'] < TARGET_SECONDS else 'over'} 10 s"
        )
        return 0
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        if keep:
            print(f"kept database {DB_NAME}")
        else:
            database_drop(DB_NAME)


if __name__ == "__main__":
    sys.exit(main())
