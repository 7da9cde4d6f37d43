"""docker-compose.yml cannot start here (no Docker engine); check its shape instead."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_has_the_whole_stack_with_health_checks_and_volumes():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"web", "worker", "gpu-worker", "beat", "postgres", "redis"}
    for name in ("web", "worker", "gpu-worker", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    for name in ("web", "worker", "gpu-worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends == {"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert "-Q gpu --concurrency 1 --prefetch-multiplier 1" in services["gpu-worker"]["command"]
    assert "-Q default" in services["worker"]["command"]
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "appdata"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test.sh" in readme and "scripts/run.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_web_process_knows_every_task_the_services_send_by_name():
    """Services enqueue by task name; in a process that only loaded the URLs (the web server) each
    name must resolve to its task, or eager mode and routing would be skipped (send_task)."""
    import subprocess
    import sys

    code = (
        "import django; django.setup(); import config.urls; from celery import current_app; "
        "names = ['rlhf.tasks.train_run', 'annotation.tasks.import_run', 'annotation.tasks.agreement_refresh']; "
        "print(sorted(n for n in names if n not in current_app.tasks))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]
