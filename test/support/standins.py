"""Message packages the node publishes when installed but that cannot be installed here
(vision_msgs, tf2_msgs: in every ROS 2 distribution, not on PyPI).

Where the real package imports, it is used as it is. Otherwise its stand-in in
test/support/standin_msgs/<package> (package.xml, CMakeLists.txt and the .msg files
written from the real package's published field layout, only the messages the node
uses) is built with
colcon and rosidl exactly as msg/ is (scripts/setup.sh), once per checkout: into
build/standins/<hash of the stand-in sources>/install, reused while the sources are
unchanged (a fresh build takes about 45 s of CPU). The test process loads the built
libraries itself (its LD_LIBRARY_PATH was read at start), and node processes get the
install on PYTHONPATH, LD_LIBRARY_PATH and AMENT_PREFIX_PATH.

test/support/standin_msgs/ holds a COLCON_IGNORE, so that a colcon workspace containing
this package never builds a stand-in in place of the real package; the sources are
copied out first.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # no package import: scripts/test.sh runs this file
STANDINS = Path(__file__).resolve().parent / "standin_msgs"
# The link scripts/setup.sh makes to numpy's headers, outside any source tree.
NUMPY_INCLUDE_LINK = Path("/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include")


@dataclass
class MessagePackages:
    """What a test needs to use the packages: env additions for node processes, which of
    them are stand-ins, and the build's wall time (0 when nothing was built)."""

    env: dict[str, str] = field(default_factory=dict)
    standins: list[str] = field(default_factory=list)
    build_seconds: float = 0.0


def importable(package: str) -> bool:
    """Whether ``<package>.msg`` imports in this process."""
    try:
        importlib.import_module(f"{package}.msg")
        return True
    except ImportError:
        return False


def _sources_hash(packages: list[str]) -> str:
    h = hashlib.sha256(sys.version.encode())
    for package in packages:
        for path in sorted((STANDINS / package).rglob("*")):
            if path.is_file():
                h.update(str(path.relative_to(STANDINS)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _build(packages: list[str], root: Path) -> float:
    """colcon build of the stand-ins into root/install; the wall time in seconds.

    Raises:
        RuntimeError: the build failed (with the end of its log).
    """
    venv = Path(os.environ.get("REFSEG_VENV", sys.prefix))
    src = root / "src"
    shutil.rmtree(root, ignore_errors=True)
    src.mkdir(parents=True)
    for package in packages:
        shutil.copytree(STANDINS / package, src / package)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv}/bin:{env.get('PATH', '')}",
               CMAKE_PREFIX_PATH=str(venv), AMENT_PREFIX_PATH=str(venv))
    numpy_include = NUMPY_INCLUDE_LINK if NUMPY_INCLUDE_LINK.is_dir() else Path(__import__("numpy").get_include())
    install = root / "install"
    cmd = [str(venv / "bin" / "colcon"), "--log-base", str(root / "log"), "build", "--base-paths", str(src),
           "--build-base", str(root / "build"), "--install-base", str(install), "--merge-install",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
           f"-DPython3_NumPy_INCLUDE_DIR={numpy_include}",
           # the libraries find each other without LD_LIBRARY_PATH (this process loads them late)
           f"-DCMAKE_INSTALL_RPATH={install / 'lib'}"]
    start = time.monotonic()
    with open(root / "build.log", "wb") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    if rc != 0:
        tail = (root / "build.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"building the stand-ins {packages} failed ({rc}); end of {root}/build.log:\n{tail}")
    return time.monotonic() - start


def _load(install: Path) -> None:
    """Make the built packages importable in this process."""
    site = install / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    # The type support is found by library name at run time: load every library now, so
    # that those look-ups find them loaded.
    for lib in sorted((install / "lib").glob("*.so")):
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    importlib.invalidate_caches()


_provided: dict[tuple[str, ...], MessagePackages] = {}


def installed(package: str) -> bool:
    """Whether the real package is installed: importable with the environment this
    process started with (stand-ins are only ever added to a test's own processes)."""
    return subprocess.call([sys.executable, "-c", f"import {package}.msg"], cwd=REPO_ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def provide(packages: tuple[str, ...]) -> MessagePackages:
    """The packages importable here and in node processes: the real ones where installed,
    else their stand-ins (built if needed, under a lock shared by parallel sessions)."""
    if packages in _provided:
        return _provided[packages]
    missing = [p for p in packages if not importable(p)]
    out = MessagePackages()
    if missing:
        base = REPO_ROOT / "build" / "standins"
        base.mkdir(parents=True, exist_ok=True)
        root = base / _sources_hash(missing)
        install = root / "install"
        with open(base / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (root / "built").exists():
                out.build_seconds = _build(missing, root)
                (root / "built").write_text(f"{out.build_seconds:.1f}\n")
        _load(install)
        for package in missing:
            if not importable(package):
                raise RuntimeError(f"the stand-in {package} was built into {install} but does not import")
        site = install / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
        for var, path in (("PYTHONPATH", site), ("LD_LIBRARY_PATH", install / "lib"),
                          ("AMENT_PREFIX_PATH", install)):
            out.env[var] = os.pathsep.join(p for p in (str(path), os.environ.get(var, "")) if p)
        out.standins = missing
    _provided[packages] = out
    return out


def main() -> int:
    """Build (or find built) the stand-ins of every package the node's outputs use, before
    the tests run (scripts/test.sh): the build then counts in no test's time limit."""
    provided = provide(("vision_msgs", "tf2_msgs"))
    if not provided.standins:
        print("standins.py: no stand-ins needed (the real packages import)", flush=True)
    elif provided.build_seconds:
        print(f"standins.py: stand-ins {', '.join(provided.standins)} built in {provided.build_seconds:.0f} s",
              flush=True)
    else:
        print(f"standins.py: stand-ins {', '.join(provided.standins)} already built", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
