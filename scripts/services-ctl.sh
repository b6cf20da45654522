#!/usr/bin/env bash
# supervisorctl for the services mode started by scripts/run-services.sh: status, restart worker, tail web, ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/supervisorctl -s "unix://$(realpath -m "${CLOUDPANEL_VAR_DIR:-var}")/supervisor.sock" "$@"
