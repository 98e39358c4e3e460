"""The marker of the parity runs too slow for the suite's time budget.

They run when REFSEG_SLOW_PARITY=1: `.ci/run` runs them after the suite (the README's
test command), so CI still runs every one of them.
"""

from __future__ import annotations

import os

import pytest

SLOW_PARITY = os.environ.get("REFSEG_SLOW_PARITY") == "1"

slow_parity = pytest.mark.skipif(
    not SLOW_PARITY, reason="slow parity run: set REFSEG_SLOW_PARITY=1 (.ci/run runs it after the suite)")
