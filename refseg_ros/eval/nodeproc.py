"""The segmenter node as a child process of the live evaluation.

The node runs exactly as users run it (``python -m refseg_ros.ros.main --ros-args -p
...``), in its own session so that a Ctrl-C at the terminal reaches the evaluation
only, which then stops the node itself (SIGINT, then SIGTERM, then SIGKILL). On Linux
the child is also told to die with its parent, so a killed evaluation leaves no node
behind. Nothing here imports rclpy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from refseg_ros.procs import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[2]


def ros_param(value: Any) -> str:
    """A value as ``-p name:=VALUE`` wants it (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f"'{v}'" for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def node_command(params: Mapping[str, Any], node_name: str,
                 extra_ros_args: Sequence[str] = ()) -> list[str]:
    """The command line of a node with these parameters under this name."""
    cmd = [sys.executable, "-m", "refseg_ros.ros.main", "--ros-args", "-r",
           f"__node:={node_name}"]
    for key, value in params.items():
        cmd += ["-p", f"{key}:={ros_param(value)}"]
    return cmd + list(extra_ros_args)


def node_environment() -> dict[str, str]:
    """This process's environment (ROS domain included), DDS kept on this machine."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NodeProcess:
    """A running node; its output goes to ``log_path``."""

    def __init__(self, cmd: list[str], log_path: Path, env: Optional[dict[str, str]] = None):
        self.cmd = cmd
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        try:
            self.popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                          stderr=subprocess.STDOUT, env=env or node_environment(),
                                          cwd=REPO_ROOT, start_new_session=True,
                                          preexec_fn=preexec)
        except BaseException:
            self._log.close()
            raise

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> Optional[int]:
        """SIGINT (the node releases the model and exits), then SIGTERM, then SIGKILL."""
        stop_process_group(self.popen, grace)
        if not self._log.closed:
            self._log.close()
        return self.popen.poll()
