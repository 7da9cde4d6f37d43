#!/usr/bin/env bash
# Set up and run every check: ruff, import contracts, mypy, pytest (unit, API, concurrency, training, browser).
# With DATABASE_URL / REDIS_URL set the tests use PostgreSQL and Redis; else SQLite and no Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "warning: could not install chromium; browser tests will be skipped" >&2
    else
        echo "warning: /usr/bin/chromium missing and not root; browser tests will be skipped" >&2
    fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Settings refuse to start without a secret key when debug is off; the tests get a throwaway one.
DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-tests-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
export DJANGO_SECRET_KEY
export DJANGO_HTTPS="${DJANGO_HTTPS:-0}"  # the test servers speak plain HTTP

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== import contracts"
.venv/bin/lint-imports --no-cache
echo "== mypy"
.venv/bin/mypy config annotation quality labelers rlhf frontend audit
echo "== pytest"
.venv/bin/pytest "$@"
