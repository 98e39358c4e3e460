"""The launch file and the parameters file agree with the node, checked without launch.

ROS 2's launch and launch_ros are not installable here (not on PyPI), so the launch file
is imported with small stand-ins for the four names it takes from them (they record the
actions it declares instead of running them; test_launch.py runs it under real launch
where that is installed). What is checked is the launch file's own logic: its arguments,
the parameters they set (each one the node declares), the executable and node name.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from refseg_ros.ros.params_file import NODE_NAME, file_key, read_parameters
from support import REPO_ROOT

LAUNCH_FILE = REPO_ROOT / "launch" / "segmenter.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "segmenter.yaml"
PYPROJECT = REPO_ROOT / "pyproject.toml"


# Values the shipped file deliberately sets otherwise than the node's default, and why.
FILE_CHOICES = {"checkpoint": "auto: the weights cache's file (the node's default, empty, means random weights)"}


def test_params_file_applies_in_any_namespace_and_matches_the_node():
    from refseg_ros.runtime.parameters import PARAMETERS

    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == [file_key()] == ["/**/refseg"], list(document)
    params = read_parameters(PARAMS_FILE)
    assert set(params) <= set(PARAMETERS), f"unknown parameters {set(params) - set(PARAMETERS)}"
    missing = {k for k, row in PARAMETERS.items() if not row.unset} - set(params)
    assert not missing, f"parameters not documented in {PARAMS_FILE.name}: {missing}"
    # Relative topics, so that a namespace moves them (the node's own are private: ~/...).
    topics = [*params["cameras"], *PARAMETERS["cameras"].default]
    topics += [v for k, v in params.items() if k.endswith("_topic")]
    absolute = [t for t in topics if t.startswith("/")]
    assert not absolute, f"absolute topic names in the defaults: {absolute}"


def test_params_file_values_are_the_tables_defaults_of_the_same_type():
    from refseg_ros.runtime.parameters import PARAMETERS

    params = read_parameters(PARAMS_FILE)
    differ = {k: (v, PARAMETERS[k].default) for k, v in params.items()
              if (v, type(v)) != (PARAMETERS[k].default, type(PARAMETERS[k].default)) and k not in FILE_CHOICES}
    assert not differ, f"{PARAMS_FILE.name} values (file, table) that differ: {differ}"
    for name in FILE_CHOICES:
        assert params[name] != PARAMETERS[name].default, f"{name}: drop it from FILE_CHOICES"
    # Commented-out examples of the unset array parameters are valid values too.
    examples = yaml.safe_load("\n".join(re.findall(r"^    # (\w+: \[.*\])$", PARAMS_FILE.read_text(), re.M)))
    unset = {k for k, row in PARAMETERS.items() if row.unset}
    assert unset <= set(examples), f"no commented example in {PARAMS_FILE.name} for {unset - set(examples)}"
    for name in unset:
        PARAMETERS[name].check(name, examples[name])


def test_every_table_row_holds():
    from refseg_ros.ros.params import Settings
    from refseg_ros.runtime.parameters import PARAMETERS, Kind

    for name, row in PARAMETERS.items():
        assert row.description and isinstance(row.live, bool), name
        row.check(name, row.value())  # every default within its own range and choices
        if row.range is not None:
            assert row.kind in (Kind.INTEGER, Kind.DOUBLE), name
        if row.choices:
            assert row.kind in (Kind.STRING, Kind.STRING_ARRAY), name
    Settings().check()  # the defaults work together


def test_node_md_lists_every_parameter_as_the_table_says():
    from refseg_ros.runtime.parameters import markdown_table

    doc = (REPO_ROOT / "docs" / "NODE.md").read_text()
    assert markdown_table() in doc, ("docs/NODE.md's parameter table is not the table's: regenerate it with "
                                     "python -m refseg_ros.runtime.parameters")


def test_a_file_keyed_by_the_plain_node_name_is_refused_by_name(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({NODE_NAME: {"ros__parameters": {"checkpoint": "auto"}}}))
    with pytest.raises(KeyError, match=r"/\*\*/refseg.*applies only without a namespace"):
        read_parameters(old)


# ------------------------------------------------------------- launch, with stand-ins
class RecordedAction:
    """Stand-in for a launch action class: records the arguments it was built with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class StandInLaunchConfiguration:
    """Stand-in for launch.substitutions.LaunchConfiguration: performs to context[name]."""

    def __init__(self, name: str):
        self.name = name

    def perform(self, context: dict) -> str:
        return context[self.name]


@pytest.fixture
def launch_file(monkeypatch):
    """The launch file's module, imported with stand-ins for launch and launch_ros."""
    modules = {name: ModuleType(name) for name in
               ("launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    modules["launch"].LaunchDescription = list
    modules["launch.actions"].DeclareLaunchArgument = RecordedAction
    modules["launch.actions"].OpaqueFunction = RecordedAction
    modules["launch.substitutions"].LaunchConfiguration = StandInLaunchConfiguration
    modules["launch_ros.actions"].LifecycleNode = RecordedAction
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("segmenter_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launched_node(launch_file, **arguments: str) -> dict:
    """The node action's arguments for these launch arguments (the rest at their defaults)."""
    entities = launch_file.generate_launch_description()
    declared = {a.args[0]: a.kwargs["default_value"] for a in entities if "default_value" in a.kwargs}
    assert set(arguments) <= set(declared), f"not launch arguments: {set(arguments) - set(declared)}"
    (setup,) = [a.kwargs["function"] for a in entities if "function" in a.kwargs]
    (node,) = setup({**declared, **arguments})
    return node.kwargs


def test_launch_defaults_run_the_installed_node_with_the_shipped_file(launch_file):
    node = launched_node(launch_file)
    # pyproject's console script for the node, '-' -> '_', is the executable in lib/refseg_ros/
    (script,) = re.findall(r'^([\w-]+) = "refseg_ros\.ros\.main:main"$', PYPROJECT.read_text(), re.MULTILINE)
    assert node["executable"] == script.replace("-", "_") == "refseg_node"
    assert (node["package"], node["name"], node["namespace"]) == ("refseg_ros", NODE_NAME, "")
    params_file, overrides = node["parameters"]
    assert Path(params_file).name == "segmenter.yaml" and read_parameters(params_file)  # the installed or source file
    assert overrides == {}, "an empty launch argument must leave the file's value"
    assert node["arguments"] == [] and node["remappings"] == []
    assert node["ros_arguments"] == ["--log-level", "info"]


def test_launch_arguments_set_declared_node_parameters(launch_file):
    from refseg_ros.ros.main import parse_args
    from refseg_ros.runtime.parameters import PARAMETERS

    given = {"namespace": "robot1", "camera": "front/image_raw", "checkpoint": "/models/sam2.pt",
             "device": "cuda:1", "text_path": "grounding", "grounding_model": "/models/gdino",
             "samwise_checkpoint": "/models/samwise.pth", "samwise_tokenizer": "/models/roberta",
             "params_file": str(PARAMS_FILE), "autostart": "false", "use_sim_time": "true",
             "log_level": "debug", "diagnostics_topic": "diagnostics"}
    node = launched_node(launch_file, **given)
    assert node["namespace"] == "robot1"
    params_file, overrides = node["parameters"]
    assert params_file == str(PARAMS_FILE)
    # use_sim_time is rclpy's own; every other one must be a parameter the node declares.
    undeclared = set(overrides) - set(PARAMETERS) - {"use_sim_time"}
    assert not undeclared, f"launch arguments set parameters the node does not declare: {undeclared}"
    assert overrides == {"cameras": ["front/image_raw"], "checkpoint": "/models/sam2.pt", "device": "cuda:1",
                         "text_path": "grounding", "grounding_model": "/models/gdino",
                         "samwise_checkpoint": "/models/samwise.pth", "samwise_tokenizer": "/models/roberta",
                         "use_sim_time": True}
    assert set(launch_file.PARAMETER_ARGUMENTS.values()) <= set(PARAMETERS)
    assert parse_args(["refseg_node", *node["arguments"]]).no_autostart  # the node's own option
    assert node["remappings"] == [("/diagnostics", "diagnostics")]
    assert node["ros_arguments"] == ["--log-level", "debug"]


def test_launch_cameras_argument_is_a_yaml_list(launch_file):
    node = launched_node(launch_file, cameras="['cam0/image_raw', '/abs/cam1/image_raw/compressed']")
    assert node["parameters"][1] == {"cameras": ["cam0/image_raw", "/abs/cam1/image_raw/compressed"]}
    with pytest.raises(ValueError, match="camera or cameras, not both"):
        launched_node(launch_file, camera="a/image_raw", cameras="['b/image_raw']")
    with pytest.raises(ValueError, match="YAML list of image topics"):
        launched_node(launch_file, cameras="cam0/image_raw")


def test_bad_parameters_stop_the_entry_point_with_the_reason(tmp_path):
    import os
    import subprocess
    import sys

    for override, reason in (("image_size:=100", "image_size must be in [64, 8192], a multiple of 64, got 100"),
                             ("mode:=sometimes", "mode must be one of live, replay, got 'sometimes'"),
                             ("qos_reliability:=maybe", "qos_reliability must be one of '', reliable, best_effort"),
                             ("overlay_alpha:=abc", "overlay_alpha has value 'abc', which is not a float")):
        proc = subprocess.run([sys.executable, "-m", "refseg_ros.ros.main", "--ros-args", "-p", override,
                               "-p", f"store_dir:={tmp_path}"], cwd=REPO_ROOT, env=dict(os.environ),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert reason in proc.stdout + proc.stderr
