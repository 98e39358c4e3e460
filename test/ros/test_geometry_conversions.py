"""The ROS side of target geometry without DDS: CameraInfo and depth messages in, object
fields, markers and points out (refseg_ros.ros.conversions)."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from refseg_ros.engine import TargetResult, TargetState
from refseg_ros.ros import conversions as c
from refseg_ros.runtime import geometry as g
from refseg_ros.runtime.render import label_image


def info(k, d=(0.0,) * 5, model="plumb_bob", w=640, h=480):
    return CameraInfo(width=w, height=h, k=list(k), d=list(d), distortion_model=model)


def test_camera_info_to_intrinsics_and_refusals():
    intr = c.intrinsics_from_camera_info(info([600, 0, 320, 0, 600, 240, 0, 0, 1]))
    assert intr.K[0, 0] == 600 and (intr.width, intr.height) == (640, 480) and not intr.distorted
    with pytest.raises(ValueError, match="all zero"):
        c.intrinsics_from_camera_info(info([0.0] * 9))
    with pytest.raises(ValueError, match="not supported"):
        c.intrinsics_from_camera_info(info([600, 0, 320, 0, 600, 240, 0, 0, 1], model="fov"))


def test_depth_messages_in_both_encodings_and_a_refusal():
    mm = np.array([[0, 1500, 2000]], np.uint16)
    msg = Image(height=1, width=3, encoding="16UC1", step=6, data=mm.astype("<u2").tobytes())
    assert np.allclose(c.depth_from_message(msg), [[np.nan, 1.5, 2.0]], equal_nan=True)
    m = np.array([[np.inf, 0.75, np.nan]], np.float32)
    msg = Image(height=1, width=3, encoding="32FC1", step=12, data=m.astype("<f4").tobytes())
    assert np.allclose(c.depth_from_message(msg), [[np.nan, 0.75, np.nan]], equal_nan=True)
    with pytest.raises(ValueError, match="not supported"):
        c.depth_from_message(Image(height=1, width=3, encoding="rgb8", step=9, data=bytes(9)))


def test_objects_markers_and_points_carry_the_geometry():
    mask = np.zeros((480, 640), bool)
    mask[200:281, 300:341] = True  # centroid (320, 240): on the optical axis
    hidden = TargetResult(2, "gone", np.zeros((480, 640), bool), 0.1, None, TargetState.LOST)
    seen = TargetResult(1, "mug", mask, 0.9, (300, 200, 340, 280), TargetState.TRACKED)
    results = [seen, hidden]
    intr = g.Intrinsics.from_fields([600, 0, 320, 0, 600, 240, 0, 0, 1], [0.0] * 5, 640, 480)
    depth = np.full((480, 640), 2.0, np.float32)
    located = g.locate_all([r.mask for r in results], [r.box for r in results], intr, depth)
    header = Header(frame_id="cam_optical")
    msg = c.objects_message(header, results, label_image(results, 480, 640), False, located)
    a, b = msg.objects
    assert (a.centroid_x, a.centroid_y, a.area, a.frame_id) == (320.0, 240.0, 81 * 41, "cam_optical")
    assert a.has_bearing and (a.bearing.x, a.bearing.y, a.bearing.z) == pytest.approx((0, 0, 1))
    assert a.has_position and (a.position.x, a.position.y, a.position.z) == pytest.approx((0, 0, 2.0))
    assert a.depth_pixels == 81 * 41
    assert (b.area, b.has_bearing, b.has_position, b.depth_pixels) == (0, False, False, 0)
    markers = c.markers_message(header, results, located).markers
    assert [m.action for m in markers] == [Marker.DELETEALL, Marker.ADD, Marker.ADD]
    assert [m.type for m in markers[1:]] == [Marker.SPHERE, Marker.TEXT_VIEW_FACING]
    assert markers[1].pose.position.z == pytest.approx(2.0) and "mug" in markers[2].text
    point = c.point_message(header, located[0].position.point)
    assert point.header.frame_id == "cam_optical" and point.point.z == pytest.approx(2.0)
    # Without geometry the new fields stay at their defaults.
    plain = c.objects_message(header, results, label_image(results, 480, 640)).objects[0]
    assert (plain.area, plain.has_bearing, plain.frame_id) == (0, False, "")
