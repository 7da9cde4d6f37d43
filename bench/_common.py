"""Helpers shared by the benchmarks: a throwaway PostgreSQL database, Django setup, percentiles."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BENCH_SECRET_KEY = secrets.token_urlsafe(50)
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server that ``PG_ADMIN_URL`` points at."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(sql)


def database_create(name: str) -> None:
    """Drop ``name`` if a previous run left it behind, then create it empty."""
    database_drop(name)
    _admin_execute(f'CREATE DATABASE "{name}"')


def database_drop(name: str) -> None:
    # WITH (FORCE) ends sessions a killed run may have left connected (PostgreSQL 13+).
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_env(db_name: str, *, url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a child process (migrate, server, export) that uses database ``db_name`` on the
    PostgreSQL server, or the database at ``url`` (a SQLite file)."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=url or database_url(db_name),
        DJANGO_DEBUG="0",
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    # The production settings, served over plain HTTP on 127.0.0.1 with a key of the run's own.
    env.setdefault("DJANGO_SECRET_KEY", BENCH_SECRET_KEY)
    env.setdefault("DJANGO_HTTPS", "0")
    env.update(extra)
    return env


def django_setup(db_name: str, *, url: str | None = None) -> None:
    """Point this process at ``db_name`` (or ``url``) and load Django."""
    os.environ.update(bench_env(db_name, url=url))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def migrate(db_name: str, *, url: str | None = None) -> float:
    """Run ``manage.py migrate`` in a child process; return the seconds it took."""
    import time

    started = time.perf_counter()
    subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=bench_env(db_name, url=url),
        check=True,
    )
    return time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def ratio(value: float, target: float, *, lower_is_better: bool = False) -> str:
    """``1.42x`` how far ``value`` is from ``target``, oriented so that >= 1.00x meets it."""
    if value == 0 or target == 0:
        return "n/a"
    return f"{(target / value if lower_is_better else value / target):.2f}x"
