#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: ruff, import layers and pytest
# (GUI tests under a virtual X server started by pytest-xvfb).
#   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh testing
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-xcb}"
.venv/bin/python -m pytest "$@"
