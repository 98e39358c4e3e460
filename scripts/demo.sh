#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: python -m refseg_ros.demo ARGS...
# The demo first fetches its model's official checkpoint (SAM2.1 hiera tiny, about 156 MB)
# into the weights cache ($REFSEG_WEIGHTS, default ~/.cache/refseg_ros/weights) when the
# cache lacks it, resumably and size-checked, as refseg-weights does. A machine that cannot
# reach the server within a few seconds (--connect-timeout) goes on with random weights,
# and the demo's first line says so. --no-download skips the fetch; --weights-url or
# $REFSEG_WEIGHTS_URL names a mirror.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# Quiet set-up (failures still print), so that the demo's first line says which weights it uses.
REFSEG_SETUP_QUIET=${REFSEG_SETUP_QUIET:-1} bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh

exec python -m refseg_ros.demo "$@"
