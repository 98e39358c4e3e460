"""Stopping child processes (nodes, players) politely, then firmly."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Optional, Sequence

ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stop_process_group(popen: subprocess.Popen, grace: float = 5.0,
                       signals: Sequence[int] = ESCALATION) -> Optional[int]:
    """Signal the process group of `popen` (started with start_new_session=True) with each
    of `signals` in turn, waiting `grace` seconds after each; returns the exit status.

    SIGINT first lets a node release its model and store cleanly.
    """
    for sig in signals:
        if popen.poll() is not None:
            break
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            break
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return popen.poll()
