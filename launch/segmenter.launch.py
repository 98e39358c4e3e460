"""Start the refseg segmenter (a lifecycle node) with ROS 2's launch:

    ros2 launch refseg_ros segmenter.launch.py [namespace:=robot1]
        [camera:=camera/image_raw | cameras:="['cam0/image_raw', 'cam1/image_raw']"]
        [checkpoint:=auto] [device:=cuda] [text_path:=grounding]
        [grounding_model:=/models/grounding-dino-tiny] [samwise_checkpoint:=...]
        [samwise_tokenizer:=...] [params_file:=my.yaml] [autostart:=false]
        [use_sim_time:=true] [log_level:=debug] [diagnostics_topic:=diagnostics]

The node is launch_ros's LifecycleNode running the installed executable `refseg_node`
(lib/refseg_ros/), named `refseg`, in `namespace`. Its parameters come from `params_file`
(default: the installed config/segmenter.yaml, keyed `/**/refseg` so that it applies
in any namespace), then from the arguments above that are not empty (an empty one
leaves the file's value). Relative topic
names (the default camera `camera/image_raw`, the results under `<camera>/refseg/`, and
the node's `~/reference`, `~/caption`, `~/status` and services) move with the namespace.
With autostart (the default) the node configures and activates itself; with
autostart:=false it waits unconfigured for a lifecycle manager (e.g.
nav2_lifecycle_manager, or `ros2 lifecycle set /robot1/refseg configure`).
"""

from __future__ import annotations

import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "refseg_ros"
EXECUTABLE = "refseg_node"
NODE_NAME = "refseg"

# Launch argument -> node parameter it sets when not empty (else the params file's value).
PARAMETER_ARGUMENTS = {
    "checkpoint": "checkpoint",
    "device": "device",
    "text_path": "text_path",
    "samwise_checkpoint": "samwise_checkpoint",
    "samwise_tokenizer": "samwise_tokenizer",
    "grounding_model": "grounding_model",
}

# name -> (default, description) of every launch argument.
ARGUMENTS = {
    "namespace": ("", "namespace of the node; relative topics move with it"),
    "params_file": ("", "ros-args parameters file (empty: the installed config/segmenter.yaml)"),
    "camera": ("", "one camera's image topic (sets the parameter cameras to [camera])"),
    "cameras": ("", "image topics as a YAML list, e.g. \"['cam0/image_raw', 'cam1/image_raw']\""),
    "checkpoint": ("", "SAM2 checkpoint file, or auto for the weights cache's file"),
    "device": ("", "auto, cpu, cuda or cuda:N"),
    "text_path": ("", "how captions are tracked: auto, samwise, grounding or none"),
    "samwise_checkpoint": ("", "SAMWISE checkpoint (text_path samwise)"),
    "samwise_tokenizer": ("", "RoBERTa tokenizer of SAMWISE"),
    "grounding_model": ("", "zero-shot detector (Grounding DINO, OWLv2) for text_path grounding"),
    "autostart": ("true", "configure and activate on start (false: wait for a lifecycle manager)"),
    "use_sim_time": ("", "true: use /clock (rosbag replay)"),
    "log_level": ("info", "ROS log level"),
    "diagnostics_topic": ("/diagnostics", "where diagnostics go (e.g. diagnostics: in the namespace)"),
}


def default_params_file() -> str:
    """The installed config/segmenter.yaml, or the source checkout's when not installed."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory(PACKAGE), "config", "segmenter.yaml")
    except Exception:  # running from a source checkout
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config",
                            "segmenter.yaml")


def truthy(text: str) -> bool:
    """A launch argument's text as a boolean (true, 1, yes, on)."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def parameter_overrides(values: dict[str, str]) -> dict[str, object]:
    """The node parameters the launch arguments `values` (name -> text) set: only those
    given (not empty), on top of the params file. Raises ValueError when both camera and
    cameras are given, or cameras is not a YAML list of topics."""
    overrides: dict[str, object] = {param: values[arg] for arg, param in PARAMETER_ARGUMENTS.items()
                                    if values.get(arg, "")}
    camera, cameras = values.get("camera", ""), values.get("cameras", "")
    if camera and cameras:
        raise ValueError("give camera or cameras, not both")
    if camera:
        overrides["cameras"] = [camera]
    elif cameras:
        topics = yaml.safe_load(cameras)
        if not isinstance(topics, list) or not topics or not all(isinstance(t, str) for t in topics):
            raise ValueError(f"cameras must be a YAML list of image topics, e.g. \"['cam0/image_raw']\", "
                             f"got {cameras!r}")
        overrides["cameras"] = topics
    if values.get("use_sim_time", ""):
        overrides["use_sim_time"] = truthy(values["use_sim_time"])
    return overrides


def node_action(values: dict[str, str]) -> LifecycleNode:
    """The segmenter node for the launch arguments `values` (name -> text)."""
    remappings = []
    if values["diagnostics_topic"] != "/diagnostics":
        remappings.append(("/diagnostics", values["diagnostics_topic"]))
    return LifecycleNode(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME,
        namespace=values["namespace"],
        parameters=[values["params_file"] or default_params_file(), parameter_overrides(values)],
        remappings=remappings,
        arguments=[] if truthy(values["autostart"]) else ["--no-autostart"],
        ros_arguments=["--log-level", values["log_level"]],
        output="screen", emulate_tty=True, sigterm_timeout="10")


def _launch_setup(context) -> list:
    return [node_action({name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS})]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the segmenter node."""
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_launch_setup)])
