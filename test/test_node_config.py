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
