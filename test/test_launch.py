"""launch/segmenter.launch.py under launch_pytest, where ROS 2's launch is installed.

launch, launch_ros and launch_pytest are not installable without a ROS 2 installation (not
on PyPI), so here this test is skipped; test_node_pipeline.py and test_node_teach.py run
the same node, from the same parameters file, as real processes; test_node_config.py
checks the launch file's structure without launch. docs/NODE.md says how it was run with
launch and launch_pytest built from source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO_ROOT / "launch" / "segmenter.launch.py"
PARAMS_FILE = REPO_ROOT / "config" / "segmenter.yaml"


launch_pytest = pytest.importorskip(
    "launch_pytest",
    reason="launch_pytest (ROS 2 launch) is not installed here; the same scenario runs as "
           "processes in test_node_pipeline.py and test_node_teach.py")

from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@pytest.fixture
def small_params(tmp_path) -> Path:
    from refseg_ros.ros.params_file import write_with_overrides

    return write_with_overrides(PARAMS_FILE, tmp_path / "params.yaml", {
        "cameras": ["/launch_cam/image_raw"], "image_size": 256, "device": "cpu",
        "store_dir": str(tmp_path / "store")})


@launch_pytest.fixture
def segmenter(small_params):
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                 launch_arguments={"params_file": str(small_params)}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.mark.launch(fixture=segmenter)
def test_launched_node_segments_a_camera():
    from _node_harness import Listener, image_msg, scene
    from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
    from sensor_msgs.msg import Image

    listener = Listener("launch_listener")
    try:
        listener.listen_status()
        listener.listen("/launch_cam/image_raw/refseg/objects", SegmentedObjectArray)
        listener.wait_status("active", timeout=120)
        frame, mask = scene(320, 240, 0)
        listener.publish_when_heard("/refseg/reference", ReferenceTarget, ReferenceTarget(
            label="square", image=image_msg(frame, "rgb8"), mask=image_msg(mask.astype(np.uint8) * 255, "mono8")))
        listener.wait_status("taught target", timeout=60)
        pub = listener.publisher("/launch_cam/image_raw", Image)
        listener.wait_for(lambda: pub.get_subscription_count() > 0, 30, "the node's camera subscription")

        def segmented():
            pub.publish(image_msg(frame, "rgb8", "launch_cam"))
            return any(m.objects for _, m in listener.received("/launch_cam/image_raw/refseg/objects"))

        listener.wait_for(segmented, 60, "an object array from the launched node")
    finally:
        listener.close()
