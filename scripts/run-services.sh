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
mkdir -p "$CLOUDPANEL_VAR_DIR"
exec .venv/bin/supervisord -n -c deploy/supervisord.conf
