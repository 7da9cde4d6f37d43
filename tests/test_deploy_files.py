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
