"""Start the refseg segmenter with ROS 2's launch:

    ros2 launch refseg_ros segmenter.launch.py [params_file:=my.yaml] [autostart:=false]
        [use_sim_time:=true] [namespace:=robot1] [log_level:=debug]

The node is the same process `refseg-node` starts (python -m refseg_ros.ros.main), so
launch and the plain entry point cannot drift apart. With autostart (the default) it
configures and activates itself; with autostart:=false it waits unconfigured for a
lifecycle manager (e.g. nav2_lifecycle_manager, or `ros2 lifecycle set /refseg configure`).
"""

import os
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration


def _default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return os.path.join(get_package_share_directory("refseg_ros"), "config", "segmenter.yaml")
    except Exception:  # running from a source checkout
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config",
                            "segmenter.yaml")


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _segmenter(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    cmd = [sys.executable, "-m", "refseg_ros.ros.main"]
    if not _truthy(arg("autostart")):
        cmd.append("--no-autostart")
    cmd += ["--ros-args", "--params-file", arg("params_file"), "--log-level", arg("log_level")]
    if _truthy(arg("use_sim_time")):
        cmd += ["-p", "use_sim_time:=true"]
    if arg("namespace"):
        cmd += ["-r", f"__ns:=/{arg('namespace').strip('/')}"]
    return [ExecuteProcess(cmd=cmd, name="refseg", output="screen", emulate_tty=True,
                           sigterm_timeout="10")]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=_default_params_file(),
                              description="ros-args parameters file (node name: refseg)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate on start"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (rosbag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        OpaqueFunction(function=_segmenter),
    ])
