"""launch/follow.launch.py agrees with the follow node, checked without launch (not
installable from PyPI); where launch_ros is installed the description is also built."""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest

from refseg_ros.ros.follow_params import PARAMETERS
from support import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / "launch" / "follow.launch.py"


def _arguments(tree: ast.Module) -> dict[str, str]:
    """ARGUMENTS of the launch file: launch argument -> name of its parameter type."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets):
            return {k.value: v.elts[0].id for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError("no ARGUMENTS table in the launch file")


def test_launch_file_starts_the_console_script_with_known_parameters():
    text = LAUNCH_FILE.read_text()
    tree = ast.parse(text)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1
    keywords = {k.arg: getattr(k.value, "value", None) for k in calls[0].keywords}
    assert keywords["package"] == "refseg_ros" and keywords["executable"] == "refseg_follow"
    # the executable is the console script refseg-follow (CMake installs refseg-x as refseg_x)
    scripts = re.findall(r'^(refseg-[\w-]+) = "([\w.:]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert ("refseg-follow", "refseg_ros.ros.follow_node:main") in scripts
    arguments = _arguments(tree)
    assert {"objects_topic", "target_id", "target_label", "cmd_vel_topic", "stamped", "max_linear_speed",
            "max_angular_speed", "stop_distance"} <= set(arguments)
    for name, kind in arguments.items():
        assert name in PARAMETERS, f"launch argument {name} is no parameter of the follow node"
        assert type(PARAMETERS[name].default).__name__ == kind, f"{name}: {kind} in the launch file"


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed")
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location("follow_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {a.name for a in module.generate_launch_description().get_launch_arguments()}
    assert set(module.ARGUMENTS) <= names and {"autostart", "params_file", "namespace"} <= names


def test_the_default_objects_topic_is_the_segmenters_for_its_default_camera():
    from refseg_ros.ros.camera import output_topic
    from refseg_ros.ros.params import PARAMETERS as SEGMENTER

    (camera,) = SEGMENTER["cameras"].default
    assert PARAMETERS["objects_topic"].default == output_topic(camera, SEGMENTER["output_namespace"].default,
                                                               "objects")
