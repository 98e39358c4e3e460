"""The package as a ROS 2 user installs it: a colcon workspace, `ros2 run`, `colcon test`.

A fresh workspace in a temporary directory gets a copy of this checkout's files under
src/refseg_ros and is built with a plain `colcon build`, on top of whatever ROS 2 the
environment holds: an apt install where one is sourced, here the Kilted wheels of the
venv (their prefix standing in for /opt/ros/<distro>, as scripts/setup.sh builds).
Then, with the workspace's install/setup.sh sourced:

- the executables are found as `ros2 run` finds them, through the ament index
  (ament_index_python's get_package_prefix + lib/refseg_ros/<exe>), one for each console
  script of pyproject.toml's [project.scripts], named with '-' replaced by '_';
- the segmenter executable, started as a program (its own shebang), brings the node up
  over DDS: it reports "active" on its status topic and answers list_targets, with the
  message type supports of the workspace's install loaded;
- `colcon test` runs this file's cheap tests through CTest and pytest, and
  `colcon test-result` counts them.

The other tests here check the dependency declarations without building anything:
package.xml for rosdep, requirements/workspace.txt for pip.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable, Optional

import pytest
from packaging.requirements import Requirement

from refseg_ros.procs import stop_process_group
from support import REPO_ROOT, pyproject
from support.node_harness import SMALL_MODEL, Listener, _param, list_targets

PACKAGE = "refseg_ros"
WORKSPACE_REQUIREMENTS = REPO_ROOT / "requirements" / "workspace.txt"
ROS_WHEELS = REPO_ROOT / "requirements" / "ros.txt"
# The pip distributions that rosdep installs under its own keys (rosdistro's
# rosdep/python.yaml); every other runtime dependency must be in workspace.txt.
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "pyyaml": "python3-yaml",
    "matplotlib": "python3-matplotlib",
    "tqdm": "python3-tqdm",
    "pillow": "python3-pil",
    "pytest": "python3-pytest",
    "pytest-timeout": "python3-pytest-timeout",
}
# ROS packages imported by launch files, not installable here (no ament index entry)
ROS_ONLY_IN_A_ROS_INSTALL = ("launch", "launch_ros")
# A cold build on a loaded two-core machine; a second is much quicker.
BUILD_TIMEOUT = 900.0


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _package_xml_keys(kinds: Iterable[str]) -> set[str]:
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    return {element.text.strip() for kind in kinds for element in root.iter(kind)}


RUN_KEYS = ("depend", "exec_depend")


def executable_names() -> dict[str, str]:
    """The `ros2 run` executable for each console script: name with '-' -> '_' -> entry point."""
    return {name.replace("-", "_"): value for name, value in pyproject()["project"]["scripts"].items()}


# --------------------------------------------------------------------- declarations
def test_package_xml_parses_with_catkin_pkg():
    """catkin_pkg (which rosdep and colcon read package.xml with) accepts the manifest."""
    from catkin_pkg.package import parse_package

    package = parse_package(str(REPO_ROOT / "package.xml"))
    package.validate()
    assert package.name == PACKAGE
    assert package.get_build_type() == "ament_cmake"
    assert package.version == pyproject()["project"]["version"]


def test_pip_requirements_are_ranges_without_ros_packages():
    requirements = _requirements(WORKSPACE_REQUIREMENTS)
    assert requirements
    ros_wheels = {_canonical(r.name) for r in _requirements(ROS_WHEELS)}
    for req in requirements:
        name = _canonical(req.name)
        assert not name.startswith(("ros-", "rclpy", "colcon", "ament", "rosidl", "catkin")), req
        assert name not in ros_wheels, f"{req} is a ROS wheel (requirements/ros.txt)"
        assert req.specifier, f"{req}: give a range"
        assert all(s.operator not in ("==", "===") for s in req.specifier), f"{req}: a pin, not a range"
        assert any(s.operator in (">=", ">", "~=") for s in req.specifier), f"{req}: no lower bound"


def test_every_runtime_dependency_is_declared_for_rosdep_or_pip():
    """pyproject's dependencies, its model extra and its test extra: each is a rosdep key in
    package.xml or a line of requirements/workspace.txt."""
    project = pyproject()["project"]
    needed = list(project["dependencies"])
    needed += project["optional-dependencies"]["adapters"] + project["optional-dependencies"]["test"]
    run_keys = _package_xml_keys(RUN_KEYS)
    test_keys = _package_xml_keys(("test_depend",))
    pip_names = {_canonical(r.name) for r in _requirements(WORKSPACE_REQUIREMENTS)}
    test_extra = {_canonical(r) for r in project["optional-dependencies"]["test"]}
    missing = []
    for spec in needed:
        name = _canonical(Requirement(spec).name)
        keys = test_keys | run_keys if name in test_extra else run_keys
        if ROSDEP_KEYS.get(name) not in keys and name not in pip_names:
            missing.append(name)
    assert not missing, f"declared neither in package.xml (rosdep) nor in workspace.txt (pip): {missing}"
    # and no rosdep key in package.xml that no dependency asks for
    python_keys = {k for k in run_keys | test_keys if k.startswith("python3-")}
    assert python_keys <= set(ROSDEP_KEYS.values()), python_keys - set(ROSDEP_KEYS.values())


def _top_level_imports(paths: Iterable[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_ros_package_is_in_package_xml():
    """A ROS package that the node, the tools or the launch files import is a run
    dependency in package.xml (rosdep installs it; ament knows its order)."""
    from ament_index_python.packages import get_packages_with_prefixes

    sources = [*(REPO_ROOT / PACKAGE).rglob("*.py"), *(REPO_ROOT / "launch").glob("*.py")]
    imported = _top_level_imports(sources)
    ros_packages = set(get_packages_with_prefixes()) | set(ROS_ONLY_IN_A_ROS_INSTALL)
    declared = _package_xml_keys(RUN_KEYS)
    assert "rclpy" in ros_packages, "the ament index of this environment lists no rclpy"
    undeclared = sorted((imported & ros_packages) - declared - {PACKAGE})
    assert not undeclared, f"imported ROS packages missing from package.xml: {undeclared}"


# ------------------------------------------------------------------ the workspace
def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _without(paths: str, dropped: Iterable[Path], kept: Iterable[str] = ()) -> str:
    """A path list without the entries at or under any of `dropped`, except those at or
    under any of `kept` (the venv: scripts/setup.sh makes it inside the checkout)."""
    dropped, kept = [str(d) for d in dropped], list(kept)
    keep = [p for p in paths.split(os.pathsep)
            if p and (any(_under(p, k) for k in kept) or not any(_under(p, d) for d in dropped))]
    return os.pathsep.join(keep)


def underlay_environment() -> dict[str, str]:
    """The environment of a shell with ROS 2 sourced and nothing of this package.

    The prefixes on AMENT_PREFIX_PATH that already hold refseg_ros (e.g. this checkout's
    install/) and the checkout itself are taken off every path; where the venv holds the
    ROS 2 wheels, its prefix is the underlay, as /opt/ros/<distro> would be.
    """
    env = dict(os.environ)
    index = Path("share") / "ament_index" / "resource_index" / "packages"
    prefixes = [Path(p) for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dropped = [p for p in prefixes if (p / index / PACKAGE).exists()] + [REPO_ROOT]
    underlay = [str(p) for p in prefixes if p not in dropped]
    if (Path(sys.prefix) / index / "rclpy").exists() and sys.prefix not in underlay:
        underlay.append(sys.prefix)  # the ROS 2 wheels
    for var in ("PYTHONPATH", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH", "PATH"):
        env[var] = _without(env.get(var, ""), dropped, kept=[sys.prefix])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(underlay)
    cmake_prefixes = underlay + [p for p in env["CMAKE_PREFIX_PATH"].split(os.pathsep) if p]
    env["CMAKE_PREFIX_PATH"] = os.pathsep.join(dict.fromkeys(cmake_prefixes))
    for var in ("COLCON_PREFIX_PATH", "PYTEST_ADDOPTS"):
        env.pop(var, None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def sourced(env: dict[str, str], setup_script: Path) -> dict[str, str]:
    """`env` after sourcing a colcon setup script (POSIX sh), as a user's shell would."""
    out = subprocess.run(["sh", "-c", '. "$1" && env -0', "sh", str(setup_script)], env=env,
                         capture_output=True, timeout=60, check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def copy_checkout(destination: Path) -> None:
    """The checkout's files as a clone would have them (tracked and new, not ignored)."""
    listing = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                             capture_output=True, timeout=60)
    if listing.returncode != 0:
        pytest.skip("not a git checkout: the workspace copy needs git's file list")
    for name in listing.stdout.decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_logged(args: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float) -> float:
    """Run a command with its output in `log`; fail with the log's end. Returns seconds taken."""
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.run(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{log.read_text()[-6000:]}"
    return time.monotonic() - start


def _type_supports_loaded(pid: int) -> list[str]:
    """The shared objects of refseg_ros's generated message support mapped by a process."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line.split()[-1] for line in maps.splitlines() if "refseg_ros" in line and ".so" in line})


def installed_prefix(ws_env: dict[str, str]) -> Path:
    """The package's prefix as `ros2 run` finds it: ament_index_python's get_package_prefix."""
    found = subprocess.run(
        [sys.executable, "-c", "from ament_index_python.packages import get_package_prefix as p; "
                               f"print(p({PACKAGE!r}))"],
        env=ws_env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    return Path(found.stdout.strip())


def _wrapper_entry_point(path: Path) -> Optional[str]:
    """The entry point an installed executable loads (its EntryPoint(value=...))."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "EntryPoint":
            return next(k.value.value for k in node.keywords if k.arg == "value")
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A colcon workspace with this package built in it: (root, build seconds, environment)."""
    root = tmp_path_factory.mktemp("ros2_ws")
    copy_checkout(root / "src" / PACKAGE)
    env = underlay_environment()
    seconds = run_logged(["colcon", "build", "--event-handlers", "console_direct+"], root, env,
                         root / "colcon_build.log", BUILD_TIMEOUT)
    print(f"colcon build of a fresh workspace: {seconds:.1f} s")
    return root, seconds, env


def test_colcon_build_installs_one_executable_per_console_script(workspace):
    root, _, env = workspace
    ws_env = sourced(env, root / "install" / "setup.sh")
    prefix = installed_prefix(ws_env)
    assert prefix.is_relative_to(root / "install"), prefix
    lib = prefix / "lib" / PACKAGE
    expected = executable_names()
    assert sorted(p.name for p in lib.iterdir()) == sorted(expected)
    for exe, entry_point in expected.items():
        assert os.access(lib / exe, os.X_OK), f"{exe} is not executable"
        assert _wrapper_entry_point(lib / exe) == entry_point, exe
    share = prefix / "share" / PACKAGE
    assert (share / "launch" / "segmenter.launch.py").is_file() and (share / "config" / "segmenter.yaml").is_file()
    # the Python package on the sourced path is the installed one, beside its messages
    where = subprocess.run(
        [sys.executable, "-c", "import refseg_ros.ros.main as m, refseg_ros.msg as g; print(m.__file__); "
                               "print(g.__file__)"],
        env=ws_env, capture_output=True, text=True, timeout=120, cwd=root)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(root / "install"), line


def test_colcon_installed_ros2_run_executable_brings_the_node_up_over_dds(workspace, tmp_path):
    root, _, env = workspace
    ws_env = sourced(env, root / "install" / "setup.sh")
    exe = installed_prefix(ws_env) / "lib" / PACKAGE / "refseg_node"
    args = [str(exe), "--ros-args"]
    for key, value in {**SMALL_MODEL, "store_dir": str(tmp_path / "store")}.items():
        args += ["-p", f"{key}:={_param(value)}"]
    log = tmp_path / "refseg_node.log"
    listener = Listener("workspace_listener")
    with open(log, "wb") as out:
        node = subprocess.Popen(args, env=ws_env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        listener.listen_status()

        def active():
            assert node.poll() is None, f"refseg_node exited ({node.returncode}):\n{log.read_text()[-4000:]}"
            return any(m.data.startswith("active") for _, m in listener.received("/refseg/status"))

        listener.wait_for(active, 180, "'active' on /refseg/status from the installed refseg_node")
        assert list_targets(listener) == {}
        loaded = _type_supports_loaded(node.pid)
        assert loaded and all(Path(p).is_relative_to(root / "install") for p in loaded), loaded
    finally:
        listener.close()
        stop_process_group(node, 10.0)


def test_colcon_test_runs_pytest_through_ctest(workspace):
    """`colcon test` on a small selection (this file's declaration tests: CTest picks the
    file, PYTEST_ADDOPTS the tests), and `colcon test-result` counts pytest's results."""
    root, _, env = workspace
    selected = sorted(name for name, value in globals().items()
                      if name.startswith("test_") and callable(value) and "colcon" not in name)
    assert len(selected) >= 3
    test_env = {**env, "PYTEST_ADDOPTS": "-k 'not colcon'"}
    run_logged(["colcon", "test", "--event-handlers", "console_direct+", "--ctest-args", "-R",
                "^test_ros_workspace$"], root, test_env, root / "colcon_test.log", 600)
    results = subprocess.run(["colcon", "test-result", "--all"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=60)
    assert results.returncode == 0, results.stdout + results.stderr
    junit = root / "build" / PACKAGE / "test_results" / PACKAGE / "test_ros_workspace.xml"
    assert junit.is_file(), (root / "colcon_test.log").read_text()[-4000:]
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    ran = sorted(case.get("name") for case in suite.iter("testcase"))
    assert ran == selected
    assert (int(suite.get("failures")), int(suite.get("errors")), int(suite.get("skipped"))) == (0, 0, 0)
    assert f"{junit.relative_to(root)}: {len(selected)} tests, 0 errors, 0 failures, 0 skipped" in results.stdout
    # the suite's DDS settings reach the tests (run_test.py lists the variables it sets)
    profile = root / "src" / PACKAGE / "config" / "fastdds_local.xml"
    log = (root / "colcon_test.log").read_text()
    assert f"FASTDDS_DEFAULT_PROFILES_FILE={profile}" in log and "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in log
