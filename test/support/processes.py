"""Python subprocesses for the tests: each in its own session, output to a log file, killed
when the test process dies, stopped with escalating signals.

No rclpy here: conftest.py uses this before any test starts ROS 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from refseg_ros.procs import stop_process_group

from . import REPO_ROOT


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test process dies, so no node outlives a run."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """``python *args`` in its own session (process group), stdout and stderr appended to
    ``log_path``, with this process's environment (which conftest.py gave the session's
    private ROS domain and localhost-only discovery) updated with ``env``, in ``cwd``
    (default: the repository root). It gets SIGKILL if the test process dies first."""

    def __init__(self, args: Sequence[str], log_path: Path, env: Optional[dict[str, str]] = None,
                 cwd: Optional[Path] = None):
        self.args = list(args)
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen([sys.executable, *self.args], stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=full_env, cwd=cwd or REPO_ROOT,
                                      start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def poll(self) -> Optional[int]:
        """The exit status, or None while it runs."""
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; raises subprocess.TimeoutExpired after ``timeout`` s."""
        return self.popen.wait(timeout=timeout)

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the process in bytes, from /proc; RuntimeError when absent."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def kill9(self) -> None:
        """Kill without warning (SIGKILL), as a power cut or an OOM kill would."""
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 10.0,
             signals: Sequence[int] = (signal.SIGINT, signal.SIGKILL)) -> Optional[int]:
        """Signal the process group with each of ``signals`` in turn, ``grace`` seconds
        apart, until it exits; close the log; returns the exit status."""
        stop_process_group(self.popen, grace, signals)
        self._log.close()
        return self.popen.returncode
