"""The distributions robots run: Humble, Jazzy, Kilted (and the next LTS), Python 3.10-3.12.

Only Kilted's rclpy installs here, so:
- every module of the tree compiles under Python 3.10 and 3.12 (the image's pyenv
  interpreters), vermin finds nothing that needs more than 3.10, and the modules that
  need only the standard library import under both;
- the node starts and segments over DDS with Kilted's rclpy laid out as Humble's
  (``rclpy.qos_event``, no ``rclpy.event_handler``, no ``rclpy.experimental``) and as
  Jazzy's (no ``rclpy.experimental``: ``--executor events`` is refused with the reason),
  test/support/distro_layout.py; everything that differs goes through refseg_ros.ros.rclpy_compat.

A missing interpreter skips its tests with the reason, except under CI=true, where it
fails; so does a missing vermin (pinned in requirements/main.txt).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import rclpy
from rclpy.subscription import Subscription
from std_msgs.msg import String

from refseg_ros.msg import SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets
from support import REPO_ROOT
from support.node_harness import Listener, image_msg, scene, start_camera, start_node

LAYOUT = str(REPO_ROOT / "test" / "support" / "distro_layout.py")
TREES = ("refseg_ros", "bench", "scripts", "test")
PYTHONS = ("3.10", "3.12")  # Humble and JetPack 6 (Ubuntu 22.04); Jazzy (Ubuntu 24.04)
W, H = 320, 240
CAM = "/cam0/image_raw"
OBJECTS = f"{CAM}/refseg/objects"

# Modules that need nothing beyond the standard library: each must import under every
# supported Python (the import check below finds all such modules; these must be among them).
STDLIB_ONLY = ("refseg_ros.atomicfile", "refseg_ros.procs", "refseg_ros.eval.nodeproc",
               "refseg_ros.runtime.mailbox", "refseg_ros.runtime.headers", "refseg_ros.runtime.threads")

# Run by the old interpreter: import every refseg_ros module; a module whose import stops
# at a third-party package (numpy, torch, rclpy...) or the generated messages is reported
# as needing it; any other error (a name the standard library lacks, a syntax or typing
# construct the interpreter refuses) is a failure.
_IMPORT_ALL = r"""
import importlib, json, sys, traceback
from pathlib import Path
root = Path(sys.argv[1])
sys.path.insert(0, str(root))
out = {"imported": [], "needs": {}, "failed": {}}
for f in sorted((root / "refseg_ros").rglob("*.py")):
    parts = list(f.relative_to(root).with_suffix("").parts)
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        importlib.import_module(name)
        out["imported"].append(name)
    except ImportError as exc:
        missing = exc.name or ""
        top = missing.split(".")[0]
        if missing in ("refseg_ros.msg", "refseg_ros.srv") or (top and top not in sys.stdlib_module_names
                                                                  and top != "refseg_ros"):
            out["needs"][name] = missing
        else:
            out["failed"][name] = traceback.format_exc(limit=4)
    except Exception:
        out["failed"][name] = traceback.format_exc(limit=4)
print(json.dumps(out))
"""


def _missing(what: str) -> None:
    """Skip for a missing tool, or fail where CI must have it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (required under CI=true)")
    pytest.skip(what)


def find_python(version: str) -> Optional[str]:
    """A working interpreter of `version` ("3.10"): pyenv's newest build of it, else
    `pythonX.Y` on PATH (a pyenv shim that names no installed build does not count)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    builds = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python"))
    patch = {b: Path(b).parents[1].name[len(version) + 1:] for b in builds}
    candidates = sorted((b for b in builds if patch[b].isdigit()), key=lambda b: -int(patch[b]))
    candidates += [p for p in [shutil.which(f"python{version}")] if p]
    for python in candidates:
        try:
            done = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return python
    return None


def python_or_skip(version: str) -> str:
    python = find_python(version)
    if python is None:
        _missing(f"no Python {version} interpreter (python{version} on PATH or under pyenv)")
    return python


def sources() -> list[Path]:
    return sorted(p for tree in TREES for p in (REPO_ROOT / tree).rglob("*.py"))


# ------------------------------------------------------------------ Python versions
@pytest.mark.parametrize("version", PYTHONS)
def test_every_module_compiles(version):
    python = python_or_skip(version)
    files = [str(p) for p in sources()]
    assert len(files) > 100, files
    code = ("import sys, warnings\nwarnings.simplefilter('error', SyntaxWarning)\nbad = []\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n        compile(open(f, 'rb').read(), f, 'exec', dont_inherit=True)\n"
            "    except (SyntaxError, SyntaxWarning) as exc:\n        bad.append(f'{f}: {exc!r}')\n"
            "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    done = subprocess.run([python, "-I", "-c", code, *files], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"Python {version} refuses:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("version", PYTHONS)
def test_standard_library_modules_import(version):
    python = python_or_skip(version)
    done = subprocess.run([python, "-I", "-B", "-c", _IMPORT_ALL, str(REPO_ROOT)], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["failed"], "\n".join(f"{k}:\n{v}" for k, v in report["failed"].items())
    assert set(STDLIB_ONLY) <= set(report["imported"]), (report["imported"], report["needs"])


def test_nothing_needs_more_than_python_310():
    try:
        import vermin  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("vermin is not installed: scripts/setup.sh installs requirements/main.txt")
        pytest.skip("vermin is not installed (pip install vermin)")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())", "--no-tips",
         "--violations", "--target=3.10-", "--eval-annotations", "--backport", "typing", "-q",
         *[str(REPO_ROOT / t) for t in TREES]],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"needs more than Python 3.10:\n{done.stdout}{done.stderr}"


# ------------------------------------------------------------------ the fake layouts
def run_layout(distro: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, LAYOUT, distro, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)


def test_humble_layout_has_humbles_modules_only():
    """The fake is real enough to fail code that imports Iron's module directly."""
    direct = run_layout("humble", "from rclpy.event_handler import SubscriptionEventCallbacks")
    assert direct.returncode != 0 and "rclpy.event_handler" in direct.stderr, direct.stderr
    checks = run_layout("humble", "\n".join([
        "import rclpy.qos_event, rclpy.subscription",
        "from refseg_ros.ros import rclpy_compat",
        "assert rclpy_compat.SubscriptionEventCallbacks is rclpy.qos_event.SubscriptionEventCallbacks",
        "assert not hasattr(rclpy.subscription.Subscription, 'get_publisher_count')",
        "assert not rclpy_compat.has_events_executor()",
        "print('ok')"]))
    assert checks.returncode == 0 and "ok" in checks.stdout, checks.stderr


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_events_executor_refused_where_missing(distro, tmp_path):
    """`--executor events` on a distribution without it: exit status 2 at once, with the
    reason and what to use instead (no node comes up half-way)."""
    node = start_node(tmp_path, {"cameras": [CAM]}, launcher=[LAYOUT, distro, "-m", "refseg_ros.ros.main"],
                      options=["--executor", "events"])
    try:
        node.popen.wait(timeout=120)
        out = node.output()
    finally:
        node.stop()
    assert node.popen.returncode == 2, out
    assert "--executor events" in out and "Kilted or newer" in out and "use --executor multi or single" in out, out
    assert "Traceback" not in out, out


def test_events_executor_available_on_kilted():
    from refseg_ros.ros import rclpy_compat
    from refseg_ros.ros.main import make_executor, parse_args

    assert rclpy_compat.has_events_executor()
    assert parse_args(["refseg-node", "--executor", "events"]).executor == "events"
    executor = make_executor("events", 1)
    try:
        assert type(executor).__name__ == "EventsExecutor"
    finally:
        executor.shutdown()


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_node_segments_over_dds_on_older_layout(distro, tmp_path):
    """The node under the older layout: configures, activates, answers its services, takes
    a target and publishes it tracked on the camera's frames."""
    listener = Listener(f"distro_{distro}_listener")
    listener.listen(OBJECTS, SegmentedObjectArray)
    listener.listen_status()
    node = start_node(tmp_path, {"cameras": [CAM], "store_dir": str(tmp_path / "store")},
                      launcher=[LAYOUT, distro, "-m", "refseg_ros.ros.main"])
    camera = start_camera(tmp_path, CAM, "cam0", rate=5, width=W, height=H)
    try:
        listener.wait_status("active (live mode)", timeout=180, node=node)
        frame, _ = scene(W, H, 0)
        reply = listener.call(AddTarget, "/refseg/add_target",
                              AddTarget.Request(label="square", image=image_msg(frame, "rgb8"),
                                                box=[80.0, 80.0, 140.0, 140.0]), timeout=120)
        assert reply.success, reply.message
        tid = reply.target_id
        listener.wait_for(lambda: sum(tid in {o.target_id for o in m.objects}
                                      for _, m in listener.received(OBJECTS)) >= 3, 180,
                          f"target {tid} in 3 object arrays", node)
        listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request(), timeout=60)
        assert [t.target_id for t in listed.targets] == [tid]
        assert node.alive()
        out = node.output()
    finally:
        camera.stop()
        node.stop()
        listener.close()
    assert "Traceback" not in out and "'qos_event' is deprecated" not in out, out[-4000:]


def test_qos_events_reach_the_node_on_humble_layout(tmp_path):
    """The QoS event callbacks (from rclpy.qos_event on Humble) fire: a best-effort camera
    and a node that asks for reliable frames are reported on status."""
    cam = "/humble_qos/image_raw"
    listener = Listener("distro_qos_listener")
    listener.listen_status()
    node = start_node(tmp_path, {"cameras": [cam], "store_dir": "", "qos_reliability": "reliable"},
                      launcher=[LAYOUT, "humble", "-m", "refseg_ros.ros.main"])
    camera = start_camera(tmp_path, cam, "humble_qos_cam", rate=10, width=W, height=H, reliable=False)
    try:
        listener.wait_status("active", timeout=180, node=node)
        text = listener.wait_status("incompatible", timeout=90, node=node)
        assert text.startswith(f"camera {cam}") and "(reliability)" in text, text
    finally:
        camera.stop()
        node.stop()
        listener.close()


# ------------------------------------------------------------------ compat helpers
def test_publisher_count_without_get_publisher_count(monkeypatch):
    """Humble's Subscription has no get_publisher_count: the graph's count stands in."""
    from refseg_ros.ros.rclpy_compat import publisher_count

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("distro_count", context=context)
        sub = node.create_subscription(String, "/distro_count/topic", lambda _: None, 10)
        assert publisher_count(node, sub) == 0
        node.create_publisher(String, "/distro_count/topic", 10)
        deadline = time.monotonic() + 30
        while publisher_count(node, sub) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert publisher_count(node, sub) == 1
        monkeypatch.delattr(Subscription, "get_publisher_count")
        assert not hasattr(sub, "get_publisher_count")
        assert publisher_count(node, sub) == 1
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
