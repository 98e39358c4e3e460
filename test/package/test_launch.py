"""launch/segmenter.launch.py run by ROS 2's launch, where launch_ros is installed.

launch and launch_ros are not installable without a ROS 2 installation (not on PyPI), so
here this test is skipped, as it is where the package is not installed (it runs the
installed executable lib/refseg_ros/refseg_node, found through the ament index: after
`colcon build` and sourcing the workspace). test_node_config.py checks the launch file's
logic without launch, and test_node_namespace.py runs the same node, namespaced, from
the same parameters file. docs/NODE.md says how this test was run with launch and
launch_ros built from their sources.

The launch file runs in its own process (launch's LaunchService, what `ros2 launch`
runs); the node it starts is checked from this process over DDS: its parameters, its
topics under the namespace, results for a camera, diagnostics moved by the remap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import REPO_ROOT
from support.node_harness import Listener, get_parameters, image_msg, scene, scene_reference
from support.processes import Process


pytest.importorskip("launch_ros", reason="launch_ros (ROS 2 launch) is not installed here; "
                    "test_node_config.py checks the launch file without it")

LAUNCH_FILE = REPO_ROOT / "launch" / "segmenter.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "segmenter.yaml"
NAMESPACE = "/robot1"
NODE = f"{NAMESPACE}/refseg"
CAMERA = "front/image_raw"
W, H = 320, 240
# What `ros2 launch FILE name:=value ...` does, without ros2cli.
RUN_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

arguments = [a.split(":=", 1) for a in sys.argv[2:]]
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments)]))
sys.exit(service.run())
"""


def installed_executable() -> Path:
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        executable = Path(get_package_prefix("refseg_ros")) / "lib" / "refseg_ros" / "refseg_node"
    except PackageNotFoundError:
        pytest.skip("refseg_ros is not in the ament index (colcon build, then source the workspace)")
    if not executable.exists():
        pytest.skip(f"{executable} is not installed (colcon build)")
    return executable


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    installed_executable()
    from refseg_ros.ros.params_file import write_with_overrides

    tmp = tmp_path_factory.mktemp("launch")
    params = write_with_overrides(PARAMS_FILE, tmp / "params.yaml", {
        "image_size": 256, "device": "cpu", "store_dir": str(tmp / "store")})
    process = Process(["-c", RUN_LAUNCH, str(LAUNCH_FILE), f"namespace:={NAMESPACE.strip('/')}",
                       f"camera:={CAMERA}", f"params_file:={params}", "text_path:=none",
                       "diagnostics_topic:=diagnostics"], tmp / "launch.log",
                      env={"REFSEG_WEIGHTS": str(tmp / "weights")})  # empty: checkpoint auto finds none
    listener = Listener("launch_listener")
    try:
        listener.listen_status(f"{NODE}/status")
        listener.wait_status("active", timeout=180, node=process, topic=f"{NODE}/status")
        yield process, listener
    finally:
        listener.close()
        process.stop()


def test_launched_node_takes_the_file_and_the_arguments(launched):
    process, listener = launched
    values = get_parameters(listener, NODE, ["cameras", "checkpoint", "image_size", "text_path"])
    assert values == {"cameras": [CAMERA], "checkpoint": "auto", "image_size": 256, "text_path": "none"}


def test_launched_node_segments_a_camera_in_its_namespace(launched):
    process, listener = launched
    from diagnostic_msgs.msg import DiagnosticArray
    from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
    from sensor_msgs.msg import Image

    camera = f"{NAMESPACE}/{CAMERA}"
    objects = f"{camera}/refseg/objects"
    listener.listen(objects, SegmentedObjectArray)
    listener.listen(f"{NAMESPACE}/diagnostics", DiagnosticArray)
    listener.publish_when_heard(f"{NODE}/reference", ReferenceTarget, scene_reference(W, H), node=process)
    listener.wait_status("taught target", timeout=60, node=process, topic=f"{NODE}/status")
    pub = listener.publisher(camera, Image)
    frame, _ = scene(W, H, 0)

    def segmented():
        pub.publish(image_msg(frame, "rgb8", "front", listener.node.get_clock().now().to_msg()))
        return any(m.objects for _, m in listener.received(objects))

    listener.wait_for(segmented, 120, f"an object array on {objects}", process)
    listener.wait_for(lambda: listener.count(f"{NAMESPACE}/diagnostics"), 60, "diagnostics in the namespace",
                      process)
