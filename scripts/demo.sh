#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: python -m refseg_ros.demo ARGS...
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# Quiet set-up (failures still print), so that the demo's first line says which weights it uses.
REFSEG_SETUP_QUIET=${REFSEG_SETUP_QUIET:-1} bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh

exec python -m refseg_ros.demo "$@"
