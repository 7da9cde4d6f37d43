#!/usr/bin/env bash
# Set up and run the product on this machine: SQLite and a filesystem Celery broker by default
# (DATABASE_URL / REDIS_URL switch to PostgreSQL and Redis). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"

scripts/setup.sh
export DJANGO_SETTINGS_MODULE=config.settings
PY=.venv/bin/python

mkdir -p var
# A secret key made once for this machine (the server refuses to start without one).
if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    [ -s var/secret_key ] || (umask 077 && $PY -c "import secrets; print(secrets.token_urlsafe(50))" >var/secret_key)
    DJANGO_SECRET_KEY="$(cat var/secret_key)"
    export DJANGO_SECRET_KEY
fi
export DJANGO_HTTPS="${DJANGO_HTTPS:-0}"  # plain HTTP on this machine; behind TLS set it to 1
$PY manage.py migrate --noinput
$PY manage.py demo_data

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Run a background process, restart it when it dies and say so (on the terminal and in its log).
supervise() {
    local name=$1 log=$2
    shift 2
    (
        trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
        while true; do
            "$@" >>"$log" 2>&1 &
            child=$!
            status=0
            wait "$child" || status=$?
            echo "$(date '+%H:%M:%S') $name exited with status $status; restarting in 2 s (log: $log)" | tee -a "$log" >&2
            sleep 2
        done
    ) &
    pids+=($!)
}

supervise "celery worker" var/worker.log .venv/bin/celery -A config worker -Q default,gpu --concurrency 2 --loglevel INFO
supervise "celery beat" var/beat.log .venv/bin/celery -A config beat --loglevel INFO --schedule var/celerybeat-schedule

cat <<MSG

  The platform is starting at  http://$HOST:$PORT/
  API docs:                    http://$HOST:$PORT/api/v1/docs/
  Django admin:                http://$HOST:$PORT/admin/

  Logins (password: demo-password):
    admin   (admin)         mia     (ML engineer)
    alice, bob, carol, dan  (labelers)

  Celery worker log: var/worker.log   beat log: var/beat.log   Ctrl-C stops everything.

MSG
# The production web server, as in the Dockerfile (granian; DJANGO_DEBUG=1 for debug pages).
.venv/bin/granian --interface wsgi --host "$HOST" --port "$PORT" --workers "${WEB_WORKERS:-2}" \
    --blocking-threads 1 --no-ws config.wsgi:application
