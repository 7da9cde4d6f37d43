"""Lease -> submit throughput of the labeling API under concurrent labelers, on PostgreSQL.

What it measures: N simulated labelers (asyncio + httpx, one keep-alive connection each) loop
``POST /api/v1/projects/{id}/assignments/next/`` then ``POST /api/v1/assignments/{aid}/submit/``
against a real gunicorn process for ``--duration`` seconds (after ``--warmup`` seconds that are
not counted). A share of cycles (``--dup-rate``) sends the same submit twice to exercise the
idempotency key under load. It prints cycles/s, p50/p99 latency per cycle and per request kind,
errors by status, and checks with SQL that no acknowledged ranking is lost or duplicated, that no
response set has more rankings than it needs, and that each ranking has its C(4,2) = 6 comparisons.

Target (issue): >= 150 cycles/s with 50 labelers on a 2-core machine, p99 cycle latency < 300 ms.

Setup: creates database ``bench_api`` (dropped at the end unless ``--keep-db``), runs migrations,
seeds one project (K=4, overlap 3, a published guideline every labeler acknowledged) through the
import service, creates the labelers with API tokens, and starts
``gunicorn config.wsgi -k gthread`` on 127.0.0.1:``--port``.

    .venv/bin/python bench/api_throughput.py [--duration 30] [--labelers 50] [--keep-db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import PYTHON, ROOT, bench_env, database_create, database_drop, django_setup, migrate, percentile

K = 4
OVERLAP = 3
TARGET_CYCLES = 150.0
TARGET_P99_MS = 300.0


@dataclass
class Stats:
    """What the simulated labelers saw; only requests that started inside the measured window count."""

    measuring: bool = False
    cycles: int = 0
    cycle_ms: list[float] = field(default_factory=list)
    request_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    no_work: int = 0
    # Over the whole run (warm-up included), for the SQL checks.
    acknowledged: dict[int, tuple[int, str]] = field(default_factory=dict)  # ranking id -> (assignment, key)
    unanswered_submits: int = 0
    dup_sent: int = 0
    dup_mismatch: int = 0  # a repeat that did not return the first ranking with created=false


def _random_ranks(response_ids: list[int], rng: random.Random) -> dict[str, int]:
    """A random dense ranking with ties: 1 is best, equal ranks are ties, no gaps."""
    raw = [rng.randint(1, len(response_ids)) for _ in response_ids]
    dense = {value: rank for rank, value in enumerate(sorted(set(raw)), start=1)}
    return {str(response_id): dense[value] for response_id, value in zip(response_ids, raw, strict=True)}


async def _labeler(base_url: str, token: str, project_id: int, stats: Stats, stop_at: float, dup_rate: float) -> None:
    import httpx

    rng = random.Random()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Token {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30.0) as client:

        async def post(kind: str, url: str, body: dict | None = None) -> httpx.Response | None:
            measured = stats.measuring
            started = time.perf_counter()
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                if measured:
                    stats.statuses[(kind, type(exc).__name__)] += 1
                return None
            if measured:
                stats.request_ms[kind].append((time.perf_counter() - started) * 1000)
                stats.statuses[(kind, response.status_code)] += 1
            return response

        while time.perf_counter() < stop_at:
            measured = stats.measuring
            started = time.perf_counter()
            lease = await post("lease", f"/api/v1/projects/{project_id}/assignments/next/")
            if lease is None or lease.status_code != 200:
                if lease is not None and lease.status_code == 204:
                    stats.no_work += 1
                await asyncio.sleep(0.05)
                continue
            assignment = lease.json()
            ranks = _random_ranks([response["id"] for response in assignment["responses"]], rng)
            key = uuid.uuid4().hex
            body = {"idempotency_key": key, "ranks": ranks, "time_spent_ms": rng.randint(5_000, 60_000)}
            url = f"/api/v1/assignments/{assignment['id']}/submit/"
            submit = await post("submit", url, body)
            if submit is None:
                stats.unanswered_submits += 1
                continue
            if submit.status_code != 201:
                continue
            ranking_id = submit.json()["id"]
            stats.acknowledged[ranking_id] = (assignment["id"], key)
            if measured:
                stats.cycles += 1
                stats.cycle_ms.append((time.perf_counter() - started) * 1000)
            if rng.random() < dup_rate:
                stats.dup_sent += 1
                again = await post("submit (repeat)", url, body)
                if again is None or again.status_code != 200 or again.json() != {**submit.json(), "created": False}:
                    stats.dup_mismatch += 1


async def _load(
    base_url: str, tokens: list[str], project_id: int, stats: Stats, warmup: float, duration: float, dup_rate: float
) -> float:
    """Run every labeler until warm-up + duration is over; return the measured window in seconds."""
    start = time.perf_counter()
    stop_at = start + warmup + duration
    tasks = [asyncio.create_task(_labeler(base_url, token, project_id, stats, stop_at, dup_rate)) for token in tokens]
    await asyncio.sleep(warmup)
    stats.measuring = True
    measure_start = time.perf_counter()
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    stats.measuring = False
    measured = time.perf_counter() - measure_start
    await asyncio.gather(*tasks)  # let in-flight cycles finish so the SQL checks see settled state
    return measured


def _seed(*, labelers: int, sets: int) -> tuple[int, list[str]]:
    """One project with ``sets`` response sets and ``labelers`` labelers; returns (project id, tokens)."""
    from annotation.services import guideline_acknowledge, project_create, prompts_import
    from labelers.models import Role
    from labelers.services import user_create

    admin = user_create(username="bench-admin", password=None, role=Role.ADMIN)
    project = project_create(
        created_by=admin,
        name="bench-api",
        k=K,
        overlap=OVERLAP,
        guideline="# Rank the responses\n\nBest first; ties allowed.",
    )
    # project_create returns its in-memory project, which does not see the guideline it published.
    project.refresh_from_db()
    rng = random.Random(0)
    words = ["the", "a", "model", "answer", "explains", "why", "because", "data", "people", "often", "can", "will"]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    lines = [
        json.dumps({"external_id": f"p{i}", "prompt": text(30), "responses": [text(60) for _ in range(K)]})
        for i in range(sets)
    ]
    prompts_import(project=project, content="\n".join(lines), fmt="jsonl")
    tokens = []
    for i in range(labelers):
        user = user_create(username=f"labeler-{i:03d}", password=None, role=Role.LABELER)
        guideline_acknowledge(guideline=project.current_guideline, user=user)
        tokens.append(user.auth_token.key)
    return project.pk, tokens


def _start_server(*, env: dict[str, str], port: int, workers: int, threads: int, log: Path) -> subprocess.Popen:
    command = [
        PYTHON,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        "--worker-class=gthread",
        f"--workers={workers}",
        f"--threads={threads}",
        "--keep-alive=30",
        "--backlog=512",
        "--log-level=warning",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(base_url: str, token: str, server: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/api/v1/me/", headers={"Authorization": f"Token {token}"}).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop_server(server: subprocess.Popen | None) -> None:
    if server is None or server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (gunicorn master + workers)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
    except psutil.NoSuchProcess:
        pass
    return total


def _postgres_cpu_seconds(db_name: str) -> float:
    """CPU so far of the PostgreSQL backends connected to ``db_name`` (the server's, via CONN_MAX_AGE)."""
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [db_name])
        pids = [row[0] for row in cursor.fetchall()]
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _verify(project_id: int, stats: Stats) -> dict[str, int]:
    """Compare what the server acknowledged with what is in the database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.id, r.assignment_id, r.idempotency_key FROM annotation_ranking r "
            "JOIN annotation_responseset s ON s.id = r.response_set_id WHERE s.project_id = %s",
            [project_id],
        )
        stored = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
        checks = {
            "rankings stored": len(stored),
            "acknowledged (201)": len(stats.acknowledged),
            "lost": sum(1 for pk, value in stats.acknowledged.items() if stored.get(pk) != value),
            "stored, never acknowledged": sum(1 for pk in stored if pk not in stats.acknowledged),
        }
        queries = {
            "duplicated (set, labeler)": """
                SELECT count(*) FROM (SELECT 1 FROM annotation_ranking r
                JOIN annotation_responseset s ON s.id = r.response_set_id WHERE s.project_id = %s
                GROUP BY r.response_set_id, r.labeler_id HAVING count(*) > 1) d""",
            "duplicated (labeler, key)": """
                SELECT count(*) FROM (SELECT 1 FROM annotation_ranking r
                JOIN annotation_responseset s ON s.id = r.response_set_id WHERE s.project_id = %s
                GROUP BY r.labeler_id, r.idempotency_key HAVING count(*) > 1) d""",
            "sets over overlap": """
                SELECT count(*) FROM annotation_responseset s
                LEFT JOIN (SELECT response_set_id, count(*) AS n FROM annotation_ranking GROUP BY 1) r
                  ON r.response_set_id = s.id
                WHERE s.project_id = %s
                  AND (s.submitted_count > s.required_count OR coalesce(r.n, 0) > s.required_count)""",
            "sets with submitted_count != rankings": """
                SELECT count(*) FROM annotation_responseset s
                LEFT JOIN (SELECT response_set_id, count(*) AS n FROM annotation_ranking GROUP BY 1) r
                  ON r.response_set_id = s.id
                WHERE s.project_id = %s AND s.submitted_count <> coalesce(r.n, 0)""",
            "complete sets with status open": """
                SELECT count(*) FROM annotation_responseset s
                WHERE s.project_id = %s AND s.submitted_count >= s.required_count AND s.status <> 'complete'""",
            "rankings without 6 comparisons": f"""
                SELECT count(*) FROM annotation_ranking r
                JOIN annotation_responseset s ON s.id = r.response_set_id
                LEFT JOIN (SELECT ranking_id, count(*) AS n FROM annotation_comparison GROUP BY 1) c
                  ON c.ranking_id = r.id
                WHERE s.project_id = %s AND coalesce(c.n, 0) <> {K * (K - 1) // 2}""",
        }
        for name, sql in queries.items():
            cursor.execute(sql, [project_id])
            checks[name] = cursor.fetchone()[0]
    checks["repeat submits not answered 200 + same ranking"] = stats.dup_mismatch
    return checks


def _report(
    args: argparse.Namespace, stats: Stats, measured: float, checks: dict[str, int], cpu: dict[str, float], queued: int
) -> int:
    cycles_per_s = stats.cycles / measured if measured else 0.0
    p99 = percentile(stats.cycle_ms, 99)
    print()
    print(
        f"api_throughput: {args.labelers} labelers, {measured:.1f} s measured after {args.warmup:.0f} s warm-up, "
        f"gunicorn gthread {args.workers} workers x {args.threads} threads, K={K}, overlap {OVERLAP}"
    )
    print(f"  cycles (lease 200 + submit 201)   {stats.cycles}")
    print(
        f"  cycles/s                          {cycles_per_s:.1f} ({cycles_per_s / TARGET_CYCLES:.2f}x the 150/s target)"
    )
    print(
        f"  cycle latency p50 / p99 / max     {percentile(stats.cycle_ms, 50):.1f} / {p99:.1f} / "
        f"{max(stats.cycle_ms, default=float('nan')):.1f} ms (p99 target 300 ms: {TARGET_P99_MS / p99:.2f}x)"
    )
    print(f"  {'request':<20}{'n':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for kind, values in stats.request_ms.items():
        print(
            f"  {kind:<20}{len(values):>8}{percentile(values, 50):>9.1f}{percentile(values, 99):>9.1f}"
            f"{max(values):>9.1f}"
        )
    by_status = sorted(stats.statuses.items(), key=str)
    print("  responses by status:  " + ", ".join(f"{kind} {status}: {n}" for (kind, status), n in by_status))
    print(f"  204 no work left                  {stats.no_work}")
    print(f"  repeat submits sent (whole run)   {stats.dup_sent}")
    print(f"  submits with no answer            {stats.unanswered_submits}")
    print(f"  Celery messages queued            {queued} (agreement refresh on submit: {args.quality_refresh})")
    other = cpu["machine"] - cpu["client"] - cpu["server"] - cpu["postgres"]
    print(
        f"  CPU seconds (whole run):          client {cpu['client']:.1f}, gunicorn {cpu['server']:.1f}, "
        f"postgres {cpu['postgres']:.1f}, other processes {other:.1f}; {cpu['machine']:.1f} used of "
        f"{cpu['available']:.1f} available"
    )
    total_cycles = len(stats.acknowledged)
    if total_cycles:
        per_cycle = {name: cpu[name] * 1000 / total_cycles for name in ("client", "server", "postgres")}
        server_side = per_cycle["server"] + per_cycle["postgres"]
        print(
            f"  CPU ms per cycle:                 gunicorn {per_cycle['server']:.1f}, postgres "
            f"{per_cycle['postgres']:.1f}, client {per_cycle['client']:.1f}; server side {server_side:.1f} ms -> "
            f"{cpu['cores'] * 1000 / server_side:.0f} cycles/s if the server had all {cpu['cores']:.0f} cores"
        )
    print("  SQL checks (whole run):")
    for name, value in checks.items():
        print(f"    {name:<48}{value}")
    bad = sum(
        checks[name]
        for name in checks
        if name not in ("rankings stored", "acknowledged (201)", "stored, never acknowledged")
    )
    errors = sum(n for (kind, status), n in stats.statuses.items() if status not in (200, 201, 204))
    meets = cycles_per_s >= TARGET_CYCLES and p99 < TARGET_P99_MS
    print(
        f"  targets: cycles/s >= 150 and p99 < 300 ms: {'met' if meets else 'NOT met'}; "
        f"integrity violations {bad}; error responses {errors}"
    )
    return 0 if bad == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds of load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--labelers", type=int, default=50, help="concurrent simulated labelers")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--port", type=int, default=8437, help="server port (8400-8499 on the shared machine)")
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of cycles that repeat their submit")
    parser.add_argument("--sets", type=int, default=0, help="response sets to seed (0: enough for 500 cycles/s)")
    parser.add_argument(
        "--quality-refresh",
        choices=("on", "off"),
        default="on",
        help="QUALITY_REFRESH_ON_SUBMIT for the server: each submit enqueues an agreement refresh (default on)",
    )
    parser.add_argument("--db-name", default="bench_api")
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()
    sets = args.sets or int((args.duration + args.warmup + 5) * 500 / OVERLAP) + args.labelers

    # Ctrl-C and kill both unwind through the finally below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = None
    # The server's var/ (Celery's filesystem queue: every submit enqueues an agreement refresh) goes
    # to a scratch folder, so the run neither fills the checkout's queue nor feeds its worker.
    var_dir = Path(tempfile.mkdtemp(prefix="bench-api-var-"))
    log = var_dir / "gunicorn.log"
    server_env = bench_env(
        args.db_name, VAR_DIR=str(var_dir), QUALITY_REFRESH_ON_SUBMIT="1" if args.quality_refresh == "on" else "0"
    )
    try:
        database_create(args.db_name)
        migrate_s = migrate(args.db_name)
        django_setup(args.db_name)
        started = time.perf_counter()
        project_id, tokens = _seed(labelers=args.labelers, sets=sets)
        seed_s = time.perf_counter() - started
        print(
            f"setup: migrate {migrate_s:.1f} s; seeded {sets} response sets, {args.labelers} labelers in {seed_s:.1f} s"
        )

        from django.db import connections

        connections.close_all()
        server = _start_server(env=server_env, port=args.port, workers=args.workers, threads=args.threads, log=log)
        base_url = f"http://127.0.0.1:{args.port}"
        _wait_ready(base_url, tokens[0], server, log)

        import psutil

        stats = Stats()
        client_before = resource.getrusage(resource.RUSAGE_SELF)
        server_before = _cpu_seconds(server.pid)
        postgres_before = _postgres_cpu_seconds(args.db_name)
        machine_before = psutil.cpu_times()
        wall_before = time.perf_counter()
        measured = asyncio.run(_load(base_url, tokens, project_id, stats, args.warmup, args.duration, args.dup_rate))
        wall = time.perf_counter() - wall_before
        client_after = resource.getrusage(resource.RUSAGE_SELF)
        machine_after = psutil.cpu_times()
        cpu = {
            "client": (client_after.ru_utime + client_after.ru_stime)
            - (client_before.ru_utime + client_before.ru_stime),
            "server": _cpu_seconds(server.pid) - server_before,
            # Backends opened during the run count from zero; none closes (CONN_MAX_AGE 60 s).
            "postgres": _postgres_cpu_seconds(args.db_name) - postgres_before,
            # user + nice + system: psutil's first three fields on Linux.
            "machine": sum(machine_after[:3]) - sum(machine_before[:3]),
            "available": wall * (psutil.cpu_count() or 1),
            "cores": float(psutil.cpu_count() or 1),
        }
        checks = _verify(project_id, stats)
        queued = len(list((var_dir / "celery" / "queue").glob("*.msg")))
        return _report(args, stats, measured, checks, cpu, queued)
    finally:
        _stop_server(server)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        if args.keep_db:
            print(f"kept database {args.db_name} and {var_dir} (gunicorn.log, celery queue)")
        else:
            database_drop(args.db_name)
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
