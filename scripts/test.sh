#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the test suite. Extra arguments go to pytest.
# Exits with pytest's status; a run that collects no test fails.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh

rc=0
python -m pytest test/ -q --timeout="${REFSEG_TEST_TIMEOUT:-300}" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
