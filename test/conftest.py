"""Fixtures shared by the whole test suite.

Every test session gets a ROS 2 domain of its own, chosen before any test imports rclpy
and exported through os.environ so that every subprocess inherits it, and DDS stays on
this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST). ``spawn_python`` starts python
subprocesses with that environment and stops them when the test ends.
"""

from __future__ import annotations

import fcntl
import os
import signal
import tempfile
from pathlib import Path

import pytest

from support.processes import Process

# ROS 2 domain ids used by test sessions: 1..100 (0 is everyone's default).
_DOMAIN_MIN, _DOMAIN_MAX = 1, 100
_domain_lock = None  # held open for the whole session


def _claim_domain_id() -> int:
    """Pick a domain id no other test session on this machine holds.

    Starts from one derived from the pid and takes the first id whose lock file can be
    locked; the lock lasts as long as this process. REFSEG_TEST_DOMAIN_ID forces one.
    """
    global _domain_lock
    forced = os.environ.get("REFSEG_TEST_DOMAIN_ID")
    if forced:
        return int(forced)
    lock_dir = Path(tempfile.gettempdir()) / "refseg_ros_test_domains"
    lock_dir.mkdir(exist_ok=True)
    span = _DOMAIN_MAX - _DOMAIN_MIN + 1
    start = os.getpid() % span
    for i in range(span):
        domain = _DOMAIN_MIN + (start + i) % span
        handle = open(lock_dir / f"{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _domain_lock = handle
        return domain
    raise RuntimeError(f"every ROS domain id in {_DOMAIN_MIN}..{_DOMAIN_MAX} is held by another test session")


# Set at import time, before test modules (or anything they import) start ROS 2.
ROS_DOMAIN_ID = _claim_domain_id()
os.environ["ROS_DOMAIN_ID"] = str(ROS_DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.pop("ROS_STATIC_PEERS", None)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Models: the session's own empty Hugging Face cache, never the user's (text_path auto
# looks there), and no call to the hub (a test that fetches points HF_ENDPOINT at a
# server on 127.0.0.1 and turns this off in its subprocess).
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="refseg-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    """This test session's ROS 2 domain id (also in os.environ["ROS_DOMAIN_ID"])."""
    return ROS_DOMAIN_ID


@pytest.fixture(scope="session")
def ros_env(ros_domain_id) -> dict[str, str]:
    """A copy of the environment subprocesses should run with (private domain, localhost DDS)."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(ros_domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def spawn_python(ros_env, tmp_path):
    """Factory: ``spawn_python(*args, env=None, cwd=None)`` runs ``python *args``.

    The process (support.processes.Process) gets the session's environment (``ros_env``,
    updated with ``env``), its output goes to a log file under tmp_path (``proc.output()``),
    it runs in ``cwd`` (default: the repository root), and it is stopped when the test ends
    (SIGINT, SIGTERM, SIGKILL, 5 s apart).
    """
    procs: list[Process] = []

    def spawn(*args, env: dict[str, str] | None = None, cwd=None) -> Process:
        full_env = dict(ros_env)
        if env:
            full_env.update(env)
        log = tmp_path / f"proc{len(procs)}.log"
        proc = Process(args, log, full_env, cwd)
        procs.append(proc)
        return proc

    yield spawn
    for proc in reversed(procs):
        proc.stop(5.0, (signal.SIGINT, signal.SIGTERM, signal.SIGKILL))
