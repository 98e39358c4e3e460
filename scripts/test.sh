#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the test suite: python -m pytest test/ -q.
# Arguments replace test/ (e.g. a folder such as test/ros/, a test file, or -k EXPR: pytest
# then takes test/ from pyproject's testpaths).
# Exits with pytest's status; a run that collects no test fails.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh
# shellcheck disable=SC1091
. scripts/env.sh

# Stand-ins of the message packages the node's standard outputs use, where the real ones
# are not installed (test/support/standins.py): built once per checkout, outside any test's
# limit.
python test/support/standins.py

rc=0
[ $# -gt 0 ] || set -- test/
python -m pytest -q --timeout="${REFSEG_TEST_TIMEOUT:-300}" "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
