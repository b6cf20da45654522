#!/usr/bin/env bash
# Production shape on one machine: web, Celery worker, Celery beat and event listener as separate processes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
port="${1:-8000}"
# Workers reach image bytes through the panel's HTTP transfer endpoint.
export CLOUDPANEL_PANEL_URL="${CLOUDPANEL_PANEL_URL:-http://127.0.0.1:$port}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
.venv/bin/celery -A cloudpanel worker --loglevel=WARNING --pool threads --concurrency 8 -Q "${CLOUDPANEL_TASK_QUEUE:-cloudpanel}" & pids+=($!)
.venv/bin/celery -A cloudpanel beat --loglevel=WARNING --schedule "${CLOUDPANEL_VAR_DIR:-var}/celerybeat-schedule" & pids+=($!)
.venv/bin/python manage.py listen_events & pids+=($!)
.venv/bin/python manage.py serve --port "$port" & pids+=($!)
wait -n
