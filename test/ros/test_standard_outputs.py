"""vision_msgs and TF conversions (refseg_ros/ros/standard_outputs.py) without a node.

vision_msgs 4.x is the real package where installed, else its stand-in (test/support/standins.py);
the 3.x and 2.x layouts, which no supported distribution ships any more, are written here
as plain classes with those versions' fields around the real geometry_msgs/Pose2D.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from geometry_msgs.msg import Pose2D, PoseWithCovariance
from std_msgs.msg import Header

from refseg_ros.engine import TargetResult, TargetState
from refseg_ros.ros import standard_outputs as so
from refseg_ros.runtime import geometry
from support.standins import provide


@pytest.fixture(scope="module")
def vision_msgs():
    provide(("vision_msgs", "tf2_msgs"))
    from vision_msgs import msg

    return msg


def header() -> Header:
    h = Header(frame_id="cam_optical")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def results() -> list[TargetResult]:
    m = np.zeros((40, 60), bool)
    m[10:20, 5:25] = True
    return [TargetResult(3, "mug", m, 0.75, (5, 10, 24, 19), TargetState.TRACKED),
            TargetResult(8, "cup", np.zeros((40, 60), bool), 0.05, None, TargetState.LOST)]


K = np.array([[100.0, 0, 30.0], [0, 120.0, 20.0], [0, 0, 1]])


def located() -> list[geometry.TargetGeometry]:
    point = np.array([0.1, -0.2, 2.0])
    return [geometry.TargetGeometry(geometry.Centroid(14.5, 14.5, 200), point / np.linalg.norm(point),
                                    geometry.Position(point, 2.0, 200)),
            geometry.EMPTY]


def test_detection_2d_array_has_the_visible_targets(vision_msgs):
    assert so.vision_msgs_layout(vision_msgs) == "4.x"
    out = so.detection_2d_array(vision_msgs, header(), results())
    assert out.header.frame_id == "cam_optical" and (out.header.stamp.sec, out.header.stamp.nanosec) == (12, 345)
    (det,) = out.detections
    assert det.id == "3" and det.header.stamp.nanosec == 345
    (hyp,) = det.results
    assert hyp.hypothesis.class_id == "mug" and hyp.hypothesis.score == pytest.approx(0.75)
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.theta) == (14.5, 14.5, 0.0)
    assert (det.bbox.size_x, det.bbox.size_y) == (20.0, 10.0)  # as the RegionOfInterest: x1 - x0 + 1


def test_detection_3d_array_and_transforms_of_located_targets(vision_msgs):
    intrinsics = geometry.Intrinsics.from_fields(K.ravel(), [0.0] * 5, 60, 40)
    out = so.detection_3d_array(vision_msgs, header(), results(), located(), intrinsics)
    (det,) = out.detections
    assert det.id == "3" and det.results[0].hypothesis.class_id == "mug"
    c = det.bbox.center
    assert (c.position.x, c.position.y, c.position.z, c.orientation.w) == (0.1, -0.2, 2.0, 1.0)
    assert det.results[0].pose.pose.position.z == 2.0
    # 20 px wide and 10 px high at 2 m through fx = 100, fy = 120
    assert (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) == pytest.approx((0.4, 10 * 2.0 / 120, 0.0))
    assert so.box_extent(None, (5, 10, 24, 19), 2.0) == (0.0, 0.0)

    (t,) = so.target_transforms(header(), results(), located(), "refseg/")
    assert (t.header.frame_id, t.child_frame_id, t.header.stamp.sec) == ("cam_optical", "refseg/target_3", 12)
    tr = t.transform.translation
    assert (tr.x, tr.y, tr.z, t.transform.rotation.w) == (0.1, -0.2, 2.0, 1.0)


def test_distorted_extent_is_wider_than_the_pinhole_one_for_barrel_distortion():
    pinhole = geometry.Intrinsics.from_fields(K.ravel(), [0.0] * 5, 60, 40)
    barrel = geometry.Intrinsics.from_fields(K.ravel(), [-0.3, 0.0, 0.0, 0.0, 0.0], 60, 40)
    box = (0, 0, 59, 39)
    assert so.box_extent(barrel, box, 1.0)[0] > so.box_extent(pinhole, box, 1.0)[0] + 1e-3


# The 3.x (Galactic) and 2.x (Foxy) layouts, field for field.
@dataclass
class Hypothesis3x:
    class_id: str = ""
    score: float = 0.0


@dataclass
class HypothesisWithPose3x:
    hypothesis: Hypothesis3x = field(default_factory=Hypothesis3x)
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)


@dataclass
class BoundingBox2D3x:
    center: Pose2D = field(default_factory=Pose2D)  # geometry_msgs/Pose2D: x, y, theta
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass
class Detection2D3x:
    header: Header = field(default_factory=Header)
    results: list = field(default_factory=list)
    bbox: BoundingBox2D3x = field(default_factory=BoundingBox2D3x)
    id: str = ""


@dataclass
class Detection2DArray3x:
    header: Header = field(default_factory=Header)
    detections: list = field(default_factory=list)


@dataclass
class Detection2D2x:  # 2.x: tracking_id, no id
    header: Header = field(default_factory=Header)
    tracking_id: str = ""


def test_the_3x_layout_gets_its_centre_and_the_2x_one_is_refused():
    v3 = SimpleNamespace(Detection2D=Detection2D3x, Detection2DArray=Detection2DArray3x, BoundingBox2D=BoundingBox2D3x,
                         ObjectHypothesisWithPose=HypothesisWithPose3x, Detection3D=Detection2D3x)
    assert so.vision_msgs_layout(v3) == "3.x"
    (det,) = so.detection_2d_array(v3, header(), results()).detections
    assert (det.bbox.center.x, det.bbox.center.y, det.id) == (14.5, 14.5, "3")
    assert det.results[0].hypothesis.class_id == "mug"
    v2 = SimpleNamespace(Detection2D=Detection2D2x, ObjectHypothesisWithPose=HypothesisWithPose3x,
                         Detection3D=Detection2D2x, BoundingBox2D=BoundingBox2D3x)
    with pytest.raises(ValueError, match="older than 3.0 .*Detection2D.id"):
        so.vision_msgs_layout(v2)


def test_outputs_follow_their_switches(vision_msgs):
    """A real node in this process: switched-off outputs make no publisher; switched on,
    they appear on the next frame; an image without frame_id gets no TF, with the reason."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("switches", context=context)
    topics = {"/cam/refseg/detections", "/cam/refseg/detections_3d", "/tf"}

    def ours() -> set[str]:
        return {n for n, _ in node.get_publisher_names_and_types_by_node(node.get_name(), node.get_namespace())}

    try:
        off = so.OutputSwitches(publish_detections=False, publish_tf=False)
        outputs, notes = so.StandardOutputs.open(node, {"/cam/image_raw": "/cam/refseg"}, 10, off)
        assert ("vision_msgs 4.x: detections on /cam/refseg/detections[_3d] (off: publish_detections false)",
                False) in notes
        assert outputs.publish("/cam/image_raw", header(), results(), located(), None, off) is None
        assert not topics & ours()
        on = so.OutputSwitches()
        assert outputs.publish("/cam/image_raw", header(), results(), located(), None, on) is None
        assert topics <= ours()
        nameless = header()
        nameless.frame_id = ""
        assert "empty header.frame_id" in outputs.publish("/cam/image_raw", nameless, results(), located(), None, on)
        outputs.close()
        assert not topics & ours()
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_tf_frame_prefix_is_checked():
    so.OutputSwitches(tf_frame_prefix="robot1/refseg/").check()
    so.OutputSwitches(tf_frame_prefix="").check()
    for bad in ("/refseg/", "my prefix/"):
        with pytest.raises(ValueError, match="tf_frame_prefix"):
            so.OutputSwitches(tf_frame_prefix=bad).check()
