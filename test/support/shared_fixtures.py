"""Where the shared numerical fixtures live (parity tests against official code).

REFSEG_FIXTURES names the folder; by default `../shared/fixtures` next to the repository.
A test whose fixtures are absent is skipped, saying which folder and variable, except
under CI=true, where absent fixtures fail the test (a CI run must not pass by skipping).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import REPO_ROOT

DEFAULT_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


def fixtures_dir(subdir: str) -> Path:
    """The fixtures folder `subdir`; skips (or fails under CI=true) when it is missing."""
    root = Path(os.environ.get("REFSEG_FIXTURES", str(DEFAULT_FIXTURES)))
    folder = root / subdir
    if not folder.is_dir():
        reason = (f"fixtures folder {folder} is missing (set REFSEG_FIXTURES to the folder "
                  f"that holds {subdir}/)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return folder
