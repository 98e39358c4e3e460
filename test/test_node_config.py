"""The launch file and the parameters file agree with the node, checked without launch."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO_ROOT / "launch" / "segmenter.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "segmenter.yaml"


def test_launch_file_runs_the_entry_point_and_params_match_the_node():
    tree = ast.parse(LAUNCH_FILE.read_text())
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    assert "refseg_ros.ros.main" in LAUNCH_FILE.read_text()
    from refseg_ros.ros.params import PARAMETERS

    params = yaml.safe_load(PARAMS_FILE.read_text())["refseg"]["ros__parameters"]
    assert set(params) <= set(PARAMETERS), f"unknown parameters {set(params) - set(PARAMETERS)}"
    missing = {k for k, (default, _) in PARAMETERS.items() if not hasattr(default, "name")} - set(params)
    assert not missing, f"parameters not documented in {PARAMS_FILE.name}: {missing}"


def test_bad_parameters_stop_the_entry_point_with_the_reason(tmp_path):
    import os
    import subprocess
    import sys

    for override, reason in (("image_size:=100", "image_size must be a positive multiple of 64"),
                             ("mode:=sometimes", "mode must be live or replay"),
                             ("qos_reliability:=maybe", "qos_reliability must be reliable or best_effort")):
        proc = subprocess.run([sys.executable, "-m", "refseg_ros.ros.main", "--ros-args", "-p", override,
                               "-p", f"store_dir:={tmp_path}"], cwd=REPO_ROOT, env=dict(os.environ),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert reason in proc.stdout + proc.stderr
