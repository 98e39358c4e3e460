"""`pip install .` gives a working package without ROS.

A copy of the source is built into a wheel and installed with pip into a fresh venv. That venv sees, besides
the installed package, only the distributions its declared runtime dependencies need
(pyproject's [project].dependencies and what they require in turn, linked from this
environment so that torch is not installed again). Run from an empty directory, the
installed copy's engine and evaluation modules import there, while rclpy does not exist.
"""

from __future__ import annotations

import ast
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

from support import REPO_ROOT, pyproject



# Variables that would let the fresh venv see the development environment.
DEV_ENV_VARS = (
    "PYTHONPATH",
    "PYTHONHOME",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "AMENT_PREFIX_PATH",
    "CMAKE_PREFIX_PATH",
    "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
)

CHECK = r"""
import importlib, importlib.util, json, sys
result = {"sys_path": sys.path}
try:
    import rclpy
    result["rclpy"] = rclpy.__file__
except ImportError as exc:
    result["rclpy"] = None
import refseg_ros, refseg_ros.engine, refseg_ros.eval
result["refseg_ros"] = refseg_ros.__file__
result["engine"] = refseg_ros.engine.__file__
result["eval"] = refseg_ros.eval.__file__
result["msg_spec"] = importlib.util.find_spec("refseg_ros.msg") is not None
import torch, sam2
result["torch"] = torch.__version__
print("RESULT " + json.dumps(result))
"""


def runtime_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that the requirements need, transitively (no extras)."""
    env = default_environment()
    env["extra"] = ""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist
        todo.extend(Requirement(r) for r in (dist.requires or []))
    return list(seen.values())


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    """Names in site-packages that belong to the distribution (packages, modules, .libs, metadata)."""
    names = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first in ("..", "__pycache__") or first.endswith(".pth"):
            continue
        names.add(first)
    return names


def test_pip_install_into_fresh_venv_imports_without_ros(tmp_path):
    # Install from a copy, so the source tree gets no build/ or egg-info from this test.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(
        REPO_ROOT / "refseg_ros",
        src / "refseg_ros",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),
    )

    env = {k: v for k, v in os.environ.items() if k not in DEV_ENV_VARS}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    vpy = venv / "bin" / "python"
    # The wheel that `pip install .` builds, built with this environment's setuptools
    # (no index needed), then installed by the fresh venv's own pip.
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
         "-w", str(wheels), str(src)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    project = pyproject()["project"]
    (wheel,) = wheels.glob(f"refseg_ros-{project['version']}-*.whl")
    # setup.py is the entry, pyproject.toml the metadata: the wheel has pyproject's.
    with zipfile.ZipFile(wheel) as archive:
        (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    assert (meta["Name"], meta["Version"]) == (project["name"], project["version"])
    assert sorted(meta.get_all("Requires-Dist")) == sorted(
        project["dependencies"] + [f'{r}; extra == "{extra}"'
                                   for extra, reqs in project["optional-dependencies"].items() for r in reqs])
    install = subprocess.run(
        [str(vpy), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr

    for script in ("refseg-demo", "refseg-node", "refseg-teach", "refseg-eval", "refseg-weights"):
        assert (venv / "bin" / script).exists(), f"console script {script} not installed"

    # Only the declared runtime dependencies (and what they need) are visible.
    declared = project["dependencies"]
    deps_dir = tmp_path / "deps"
    deps_dir.mkdir()
    closure = runtime_closure(declared)
    closure_names = {d.metadata["Name"].lower() for d in closure}
    assert not any(n.startswith("ros-") or n == "rclpy" for n in closure_names), closure_names
    for dist in closure:
        site = Path(dist.locate_file(""))
        for entry in top_level_entries(dist):
            target = site / entry
            if target.exists() and not (deps_dir / entry).exists():
                (deps_dir / entry).symlink_to(target)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    run = subprocess.run(
        [str(vpy), "-c", CHECK],
        env={**env, "PYTHONPATH": str(deps_dir)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    line = [l for l in run.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])

    site = str(venv / "lib")
    assert result["rclpy"] is None, f"rclpy is visible in the fresh venv: {result['rclpy']}"
    assert result["refseg_ros"].startswith(site), f"imported {result['refseg_ros']}, not the installed copy"
    assert result["engine"].startswith(site), result["engine"]
    assert result["eval"].startswith(site), result["eval"]
    assert not any(p == str(REPO_ROOT) or p.startswith(str(REPO_ROOT) + os.sep) for p in result["sys_path"])
    # The generated interfaces come from a colcon build, not from pip.
    assert result["msg_spec"] is False


def test_setup_py_takes_everything_from_pyproject():
    """setup.py is the pip entry, pyproject.toml the one place for the metadata.

    setup.py calls setup() with no arguments and declares nothing else; that the wheel
    built through it carries pyproject's name, version and dependencies is checked by
    the install test above.
    """
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [ast.unparse(c) for c in calls] == ["setup()"]
    names = {t.id for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign))
             for t in ast.walk(n) if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)}
    assert not names, f"setup.py defines {names}: metadata belongs in pyproject.toml"
