"""Lease -> submit throughput and latency of the labeling API under concurrent labelers, on PostgreSQL
(or, with ``--database sqlite``, on the embedded default's SQLite file).

Target (issue): >= 150 lease+submit cycles/s with 50 concurrent labelers on a 2-core machine,
p99 latency under 300 ms, and no lost or duplicated ranking.

N simulated labelers, one keep-alive HTTP connection each, loop
``POST /api/v1/projects/{id}/assignments/next/`` then ``POST /api/v1/assignments/{aid}/submit/``
(a random dense ranking with ties) against a real web server process (granian, the production
server; ``--server gunicorn`` for the previous one). A share of cycles (``--dup-rate``) repeats its
submit with the same idempotency key, which must answer 200 with the first ranking. Two phases,
each ``--duration`` seconds after ``--warmup`` seconds that do not count:

1. capacity: every labeler starts its next cycle as soon as the last one ends (a closed loop).
   Cycles/s here is what the server sustains. Latency in a closed loop is set by the load itself
   (Little's law: mean cycle time = labelers / throughput), so it is printed but not judged.
2. at the target rate: the same labelers each start a cycle every labelers / ``--rate`` seconds
   (150 cycles/s in all), from staggered offsets. Cycle latency counts from the moment a cycle
   was due, not from when the labeler got round to sending it, so a server that falls behind
   shows up in the tail instead of slowing the load down. This is the p99 the target is about.

Afterwards it checks with SQL that every acknowledged ranking is stored once (lost, duplicated),
that no response set has more rankings than it needs or a count that disagrees with its rankings,
and that each ranking has its C(4,2) = 6 comparisons; exit status 1 if any check fails. It also
prints the CPU per cycle of the client, the web server and the PostgreSQL backends.

Setup: database ``bench_api`` (dropped at the end unless ``--keep-db``), migrations, one project
(K=4, overlap 3, a guideline every labeler acknowledged) seeded through the import service, the
labelers with API tokens; the server on 127.0.0.1:``--port``.

    .venv/bin/python bench/api_throughput.py [--duration 30] [--labelers 50] [--rate 150] [--keep-db]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

from bench._common import (
    PG_ADMIN_URL,
    PYTHON,
    ROOT,
    bench_env,
    database_create,
    database_drop,
    django_setup,
    migrate,
    percentile,
)

K = 4
OVERLAP = 3
TARGET_CYCLES = 150.0
TARGET_P99_MS = 300.0


@dataclass
class Stats:
    """What the simulated labelers saw in one phase; only cycles due inside the measured window count."""

    measuring: bool = False
    cycles: int = 0
    completed: int = 0  # cycles over the whole phase, warm-up included (for CPU per cycle)
    cycle_ms: list[float] = field(default_factory=list)
    request_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    no_work: int = 0
    unanswered_submits: int = 0
    dup_sent: int = 0
    dup_mismatch: int = 0  # a repeat that did not return the first ranking with created=false


@dataclass
class Run:
    """Both phases, for the SQL checks: every ranking the server acknowledged with 201."""

    acknowledged: dict[int, tuple[int, str]] = field(default_factory=dict)  # ranking id -> (assignment, key)


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends JSON POSTs and reads ``Content-Length`` answers.

    A client this thin costs a fraction of a millisecond per request, so the CPU it takes from the
    two cores the server shares with it stays small next to the server's (httpx took ~8 ms a cycle).
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Token {token}\r\nContent-Type: application/json\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send ``POST path`` and return (status, body); reconnects once if the server closed it."""
        request = f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None
            try:
                self.writer.write(request)
                head = await self.reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
                continue
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError(f"unexpected Transfer-Encoding answering {path}")
            payload = await self.reader.readexactly(length) if length else b""
            if close:
                self.close()
            return status, payload
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _random_ranks(response_ids: list[int], rng: random.Random) -> dict[str, int]:
    """A random dense ranking with ties: 1 is best, equal ranks are ties, no gaps."""
    raw = [rng.randint(1, len(response_ids)) for _ in response_ids]
    dense = {value: rank for rank, value in enumerate(sorted(set(raw)), start=1)}
    return {str(response_id): dense[value] for response_id, value in zip(response_ids, raw, strict=True)}


async def _labeler(
    connection: _Connection,
    project_id: int,
    stats: Stats,
    run: Run,
    *,
    stop_at: float,
    interval: float | None,
    offset: float,
    dup_rate: float,
) -> None:
    """Lease and submit until ``stop_at``: back to back (``interval`` None) or one cycle due every
    ``interval`` seconds from ``offset``."""
    rng = random.Random()

    async def post(kind: str, url: str, body: bytes = b"") -> tuple[int, bytes] | None:
        measured = stats.measuring
        started = time.perf_counter()
        try:
            answer = await connection.post(url, body)
        except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
            if measured:
                stats.statuses[(kind, type(exc).__name__)] += 1
            return None
        if measured:
            stats.request_ms[kind].append((time.perf_counter() - started) * 1000)
            stats.statuses[(kind, answer[0])] += 1
        return answer

    lease_url = f"/api/v1/projects/{project_id}/assignments/next/"
    due = time.perf_counter() + offset
    while True:
        if interval is None:
            due = time.perf_counter()
        else:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if due >= stop_at:
            return
        measured = stats.measuring
        lease = await post("lease", lease_url)
        if lease is None or lease[0] != 200:
            if lease is not None and lease[0] == 204:
                stats.no_work += 1
            await asyncio.sleep(0.05)
            due += interval or 0.0
            continue
        assignment = json.loads(lease[1])
        ranks = _random_ranks([response["id"] for response in assignment["responses"]], rng)
        key = uuid.uuid4().hex
        body = json.dumps({"idempotency_key": key, "ranks": ranks, "time_spent_ms": rng.randint(5_000, 60_000)})
        url = f"/api/v1/assignments/{assignment['id']}/submit/"
        submit = await post("submit", url, body.encode())
        if submit is None:
            stats.unanswered_submits += 1
        elif submit[0] == 201:
            first = json.loads(submit[1])
            run.acknowledged[first["id"]] = (assignment["id"], key)
            stats.completed += 1
            if measured:
                stats.cycles += 1
                stats.cycle_ms.append((time.perf_counter() - due) * 1000)
            if rng.random() < dup_rate:
                stats.dup_sent += 1
                again = await post("submit (repeat)", url, body.encode())
                if again is None or again[0] != 200 or json.loads(again[1]) != {**first, "created": False}:
                    stats.dup_mismatch += 1
        due += interval or 0.0


async def _phase(
    connections: list[_Connection],
    project_id: int,
    run: Run,
    *,
    warmup: float,
    duration: float,
    rate: float | None,
    dup_rate: float,
) -> tuple[Stats, float]:
    """All labelers for warm-up + duration; returns the phase's stats and its measured seconds."""
    stats = Stats()
    start = time.perf_counter()
    stop_at = start + warmup + duration
    interval = len(connections) / rate if rate else None
    rng = random.Random(0)
    tasks = [
        asyncio.create_task(
            _labeler(
                connection,
                project_id,
                stats,
                run,
                stop_at=stop_at,
                interval=interval,
                offset=rng.uniform(0, interval) if interval else 0.0,
                dup_rate=dup_rate,
            )
        )
        for connection in connections
    ]
    await asyncio.sleep(warmup)
    stats.measuring = True
    measure_start = time.perf_counter()
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    stats.measuring = False
    measured = time.perf_counter() - measure_start
    await asyncio.gather(*tasks)  # let in-flight cycles finish so the SQL checks see settled state
    return stats, measured


def _seed(*, labelers: int, sets: int) -> tuple[int, list[str]]:
    """One project with ``sets`` response sets and ``labelers`` labelers; returns (project id, tokens)."""
    from annotation.services import guideline_acknowledge, project_create, prompts_import
    from labelers.models import Role
    from labelers.services import user_create
    from labelers.tokens import api_token_create

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
        tokens.append(api_token_create(user=user)[1])
    return project.pk, tokens


def _server_command(*, server: str, port: int, workers: int, threads: int) -> list[str]:
    if server == "granian":
        return [
            str(Path(PYTHON).parent / "granian"),
            "--interface=wsgi",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--workers={workers}",
            f"--blocking-threads={threads}",
            "--no-ws",
            "--log-level=warning",
            "config.wsgi:application",
        ]
    return [
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


def _start_server(*, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(port: int, token: str, server: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/me/", headers={"Authorization": f"Token {token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


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
    """User + system CPU of a process and its children so far (the server's master and workers)."""
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
    """CPU so far of the PostgreSQL backends connected to ``db_name`` (the server's: persistent)."""
    import psutil
    import psycopg

    # Its own short connection (to the admin database, so it is not counted): the load runs in an
    # event loop, where Django refuses to query.
    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [db_name]).fetchall()
    pids = [row[0] for row in rows]
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


class _CpuMeter:
    """CPU of the client, the server, the PostgreSQL backends and the whole machine over a phase."""

    def __init__(self, server_pid: int, db_name: str | None) -> None:
        self.server_pid, self.db_name = server_pid, db_name

    def _read(self) -> dict[str, float]:
        import psutil

        usage = resource.getrusage(resource.RUSAGE_SELF)
        machine = psutil.cpu_times()
        return {
            "client": usage.ru_utime + usage.ru_stime,
            "server": _cpu_seconds(self.server_pid),
            "postgres": _postgres_cpu_seconds(self.db_name) if self.db_name else 0.0,
            "machine": machine.user + machine.nice + machine.system,
            "wall": time.perf_counter(),
        }

    def __enter__(self) -> _CpuMeter:
        self.before = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        after = self._read()
        self.used = {name: after[name] - self.before[name] for name in after}
        self.cores = float(psutil.cpu_count() or 1)


def _verify(project_id: int, run: Run, dup_mismatch: int) -> dict[str, int]:
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
            "acknowledged (201)": len(run.acknowledged),
            "lost": sum(1 for pk, value in run.acknowledged.items() if stored.get(pk) != value),
            "stored, never acknowledged": sum(1 for pk in stored if pk not in run.acknowledged),
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
    checks["repeat submits not answered 200 + same ranking"] = dup_mismatch
    return checks


def _latencies(stats: Stats) -> None:
    p99 = percentile(stats.cycle_ms, 99)
    print(
        f"  cycle latency p50 / p99 / max     {percentile(stats.cycle_ms, 50):.1f} / {p99:.1f} / "
        f"{max(stats.cycle_ms, default=float('nan')):.1f} ms"
    )
    print(f"    {'request':<18}{'n':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for kind, values in sorted(stats.request_ms.items()):
        print(
            f"    {kind:<18}{len(values):>8}{percentile(values, 50):>9.1f}{percentile(values, 99):>9.1f}"
            f"{max(values):>9.1f}"
        )
    by_status = sorted(stats.statuses.items(), key=str)
    print("  responses by status   " + ", ".join(f"{kind} {status}: {n}" for (kind, status), n in by_status))
    print(
        f"  204 no work {stats.no_work}; submits with no answer {stats.unanswered_submits}; "
        f"repeat submits sent {stats.dup_sent}"
    )


def _report(
    args: argparse.Namespace,
    capacity: tuple[Stats, float, _CpuMeter],
    paced: tuple[Stats, float],
    checks: dict[str, int],
    queued: int,
) -> int:
    stats, measured, cpu = capacity
    cycles_per_s = stats.cycles / measured if measured else 0.0
    print()
    print(
        f"api_throughput: {args.labelers} labelers, K={K}, overlap {OVERLAP}, {args.server} {args.workers} "
        f"workers x {args.threads} threads, {'SQLite' if args.database == 'sqlite' else 'PostgreSQL'}; "
        f"each phase {measured:.0f} s after {args.warmup:.0f} s warm-up"
    )
    print("1. capacity (closed loop: each labeler starts its next cycle when the last one ends)")
    print(f"  cycles (lease 200 + submit 201)   {stats.cycles}")
    print(
        f"  cycles/s                          {cycles_per_s:.1f} ({cycles_per_s / TARGET_CYCLES:.2f}x the 150/s target)"
    )
    _latencies(stats)
    used = cpu.used
    other = used["machine"] - used["client"] - used["server"] - used["postgres"]
    print(
        f"  CPU seconds                       client {used['client']:.1f}, web server {used['server']:.1f}, "
        f"postgres {used['postgres']:.1f}, other processes {other:.1f}; {used['machine']:.1f} of "
        f"{used['wall'] * cpu.cores:.1f} available"
    )
    if stats.completed:
        per = {name: used[name] * 1000 / stats.completed for name in ("client", "server", "postgres")}
        server_side = per["server"] + per["postgres"]
        print(
            f"  CPU ms per cycle                  web server {per['server']:.1f}, postgres {per['postgres']:.1f}, "
            f"client {per['client']:.1f}; server side {server_side:.1f} ms -> "
            f"{cpu.cores * 1000 / server_side:.0f} cycles/s if the server had all {cpu.cores:.0f} cores"
        )

    stats, measured = paced
    achieved = stats.cycles / measured if measured else 0.0
    p99 = percentile(stats.cycle_ms, 99)
    print(
        f"2. at the target rate ({args.rate:.0f} cycles/s offered: each labeler one cycle every "
        f"{args.labelers / args.rate * 1000:.0f} ms; latency from when a cycle was due)"
    )
    print(f"  cycles/s achieved                 {achieved:.1f}")
    _latencies(stats)
    print(f"  cycle p99 {p99:.1f} ms: {TARGET_P99_MS / p99:.2f}x the 300 ms target")

    print("SQL checks (both phases):")
    for name, value in checks.items():
        print(f"    {name:<48}{value}")
    print(f"  Celery messages queued            {queued} (agreement refresh on submit: {args.quality_refresh})")
    bad = sum(
        checks[name]
        for name in checks
        if name not in ("rankings stored", "acknowledged (201)", "stored, never acknowledged")
    )
    errors = sum(
        n for phase in (capacity[0], paced[0]) for (_, status), n in phase.statuses.items() if status not in (200, 201)
    )
    meets = cycles_per_s >= TARGET_CYCLES and achieved >= 0.98 * args.rate and p99 < TARGET_P99_MS
    print(
        f"targets (capacity >= 150 cycles/s; at 150 cycles/s, cycle p99 < 300 ms): {'met' if meets else 'NOT met'}; "
        f"integrity violations {bad}; error responses {errors}"
    )
    return 0 if bad == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds of each phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring, each phase")
    parser.add_argument("--labelers", type=int, default=50, help="concurrent simulated labelers")
    parser.add_argument("--rate", type=float, default=TARGET_CYCLES, help="cycles/s offered in phase 2")
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian", help="web server")
    parser.add_argument("--workers", type=int, default=4, help="web server worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument("--port", type=int, default=8437, help="server port (8400-8499 on the shared machine)")
    parser.add_argument("--dup-rate", type=float, default=0.05, help="share of cycles that repeat their submit")
    parser.add_argument("--sets", type=int, default=0, help="response sets to seed (0: enough for 500 cycles/s)")
    parser.add_argument(
        "--quality-refresh",
        choices=("on", "off"),
        default="on",
        help="QUALITY_REFRESH_ON_SUBMIT for the server: each submit enqueues an agreement refresh (default on)",
    )
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="PostgreSQL (the production setup) or the embedded default's SQLite file (scripts/run.sh)",
    )
    parser.add_argument("--db-name", default="bench_api")
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    args = parser.parse_args()
    sets = args.sets or int(2 * (args.duration + args.warmup + 5) * 500 / OVERLAP) + args.labelers

    # Ctrl-C and kill both unwind through the finally below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = None
    # The server's var/ (Celery's filesystem queue: every submit may enqueue an agreement refresh)
    # goes to a scratch folder, so the run neither fills the checkout's queue nor feeds its worker.
    var_dir = Path(tempfile.mkdtemp(prefix="bench-api-var-"))
    log = var_dir / "server.log"
    sqlite = args.database == "sqlite"
    url = f"sqlite:///{var_dir / 'db.sqlite3'}" if sqlite else None
    server_env = bench_env(
        args.db_name,
        url=url,
        VAR_DIR=str(var_dir),
        QUALITY_REFRESH_ON_SUBMIT="1" if args.quality_refresh == "on" else "0",
    )
    try:
        if not sqlite:
            database_create(args.db_name)
        migrate_s = migrate(args.db_name, url=url)
        django_setup(args.db_name, url=url)
        started = time.perf_counter()
        project_id, tokens = _seed(labelers=args.labelers, sets=sets)
        seed_s = time.perf_counter() - started
        print(
            f"setup: migrate {migrate_s:.1f} s; seeded {sets} response sets, {args.labelers} labelers in {seed_s:.1f} s"
        )

        from django.db import connections

        connections.close_all()
        command = _server_command(server=args.server, port=args.port, workers=args.workers, threads=args.threads)
        server = _start_server(command=command, env=server_env, log=log)
        _wait_ready(args.port, tokens[0], server, log)

        async def both_phases() -> tuple[tuple[Stats, float, _CpuMeter], tuple[Stats, float], Run]:
            run = Run()
            connections = [_Connection("127.0.0.1", args.port, token) for token in tokens]
            try:
                with _CpuMeter(server.pid, None if sqlite else args.db_name) as cpu:
                    stats, measured = await _phase(
                        connections,
                        project_id,
                        run,
                        warmup=args.warmup,
                        duration=args.duration,
                        rate=None,
                        dup_rate=args.dup_rate,
                    )
                capacity = (stats, measured, cpu)
                paced = await _phase(
                    connections,
                    project_id,
                    run,
                    warmup=args.warmup,
                    duration=args.duration,
                    rate=args.rate,
                    dup_rate=args.dup_rate,
                )
            finally:
                for connection in connections:
                    connection.close()
            return capacity, paced, run

        # The client's own heap (Django, the seed) out of the garbage collector's full passes: they
        # pause every labeler at once and would show up as the server's latency.
        gc.collect()
        gc.freeze()
        capacity, paced, run = asyncio.run(both_phases())
        checks = _verify(project_id, run, capacity[0].dup_mismatch + paced[0].dup_mismatch)
        queued = len(list((var_dir / "celery" / "queue").glob("*.msg")))
        return _report(args, capacity, paced, checks, queued)
    finally:
        _stop_server(server)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django may not be set up yet
            pass
        if args.keep_db:
            print(f"kept database {url or args.db_name} and {var_dir} (server.log, celery queue)")
        else:
            if not sqlite:
                database_drop(args.db_name)
            shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
