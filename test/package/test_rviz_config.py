"""config/refseg.rviz shows what the node publishes for its default camera.

The RViz file names topics as text; here they are compared with the names the node
builds (camera.output_topic) from the parameter table's defaults, so renaming an output
or changing a default without the view fails.
"""

from __future__ import annotations

import yaml

from support import REPO_ROOT


RVIZ_FILE = REPO_ROOT / "config" / "refseg.rviz"


def displays() -> dict[str, dict]:
    view = yaml.safe_load(RVIZ_FILE.read_text())
    return {d["Class"].split("/")[-1]: d for d in view["Visualization Manager"]["Displays"]}


def test_the_view_shows_the_default_cameras_overlay_markers_and_tf():
    from refseg_ros.ros.camera import output_topic
    from refseg_ros.ros.params import PARAMETERS

    (camera,) = PARAMETERS["cameras"].default
    namespace = PARAMETERS["output_namespace"].default

    def absolute(name: str) -> str:  # RViz subscribes in the root namespace
        return "/" + output_topic(camera, namespace, name).lstrip("/")

    shown = displays()
    assert shown["Image"]["Topic"]["Value"] == absolute("overlay")
    assert shown["MarkerArray"]["Topic"]["Value"] == absolute("markers")
    assert shown["TF"]["Enabled"] is True
    # the node's result publishers are reliable (qos.output_qos): a reliable display matches them
    assert {shown[k]["Topic"]["Reliability Policy"] for k in ("Image", "MarkerArray")} == {"Reliable"}

