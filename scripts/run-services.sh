#!/usr/bin/env bash
# Production shape on one machine: web, Celery worker, Celery beat and event listener as separate processes under
# supervisord (deploy/supervisord.conf), each restarted on its own when it exits; stopping this stops all four.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CLOUDPANEL_ROOT="$PWD"
export CLOUDPANEL_PORT="${1:-8000}"
export CLOUDPANEL_VAR_DIR="$(realpath -m "${CLOUDPANEL_VAR_DIR:-var}")"
export CLOUDPANEL_TASK_QUEUE="${CLOUDPANEL_TASK_QUEUE:-cloudpanel}"
# Workers reach image bytes through the panel's HTTP transfer endpoint.
export CLOUDPANEL_PANEL_URL="${CLOUDPANEL_PANEL_URL:-http://127.0.0.1:$CLOUDPANEL_PORT}"
# Two malloc arenas per process, not eight per core: the web's request threads and the worker's task threads
# otherwise each grow an arena of their own, and the resident memory with them.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
mkdir -p "$CLOUDPANEL_VAR_DIR"
exec .venv/bin/supervisord -n -c deploy/supervisord.conf
