"""Live parameters and rectified cameras, over real DDS: the node in its own process, this
process sending it frames and CameraInfo and calling its set_parameters, get_parameters and
describe_parameters services (rcl_interfaces), as `ros2 param set` does.

The camera topic ends in image_rect, so by default (camera_rectified auto) the node reads
its CameraInfo's P, not K and D; the CameraInfo's P differs from K and D is strong, so
the two models give bearings degrees apart.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from refseg_ros.msg import SegmentedObjectArray
from support.node_harness import Listener, get_parameters, image_msg, scene, scene_reference, start_node
from support.tiny_models import save_owlv2

W, H = 160, 120
CAM, INFO, NODE = "/lp/image_rect", "/lp/camera_info", "/refseg"
OBJECTS = f"{CAM}/refseg/objects"
K = np.array([[150.0, 0.0, 83.0], [0.0, 148.0, 57.0], [0.0, 0.0, 1.0]])
D = np.array([-0.3, 0.1, 0.001, -0.001, -0.02])
P = np.array([[118.0, 0.0, 76.0, 0.0], [0.0, 117.0, 61.5, 0.0], [0.0, 0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live_params")
    listener = Listener("live_params_listener")
    listener.listen_status()
    listener.listen(OBJECTS, SegmentedObjectArray)
    node = start_node(tmp, {"cameras": [CAM], "camera_info_topics": [INFO], "store_dir": "",
                            "status_repeat_period": 0.0, "grounding_model": str(save_owlv2(tmp / "owlv2"))})
    try:
        listener.wait_status("active", timeout=120, node=node)
        listener.teach(scene_reference(W, H), timeout=90, node=node)
        yield listener, node
    finally:
        node.stop()
        listener.close()


def camera_info(stamp) -> CameraInfo:
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=list(D), k=list(K.reshape(-1)),
                     p=list(P.reshape(-1)))
    msg.header.stamp, msg.header.frame_id = stamp, "lp_optical"
    return msg


def frame(listener: Listener, node, t: int, timeout: float = 120.0) -> SegmentedObjectArray:
    """Send CameraInfo and frame t of the scene with a new stamp; the node's objects for it."""
    stamp = listener.node.get_clock().now().to_msg()
    listener.publish_when_heard(INFO, CameraInfo, camera_info(stamp), node=node)
    time.sleep(0.2)
    listener.publish_when_heard(CAM, Image, image_msg(scene(W, H, t)[0], "rgb8", "lp_optical", stamp), node=node)
    key = (stamp.sec, stamp.nanosec)
    return listener.wait_for(lambda: next((m for _, m in listener.received(OBJECTS)
                                           if (m.header.stamp.sec, m.header.stamp.nanosec) == key), None),
                             timeout, f"objects of the frame stamped {key}", node)


def located(listener: Listener, node, tries: int = 12):
    """A frame's object with a mask and a bearing (the random model's mask may be empty on
    some frames)."""
    for t in range(tries):
        for obj in frame(listener, node, t).objects:
            if obj.area > 0 and obj.has_bearing:
                return obj
    raise AssertionError(f"no object with a bearing in {tries} frames:\n{node.output()[-3000:]}")


def ray(x: float, y: float) -> np.ndarray:
    v = np.array([x, y, 1.0])
    return v / np.linalg.norm(v)


def bearing_of(obj) -> np.ndarray:
    return np.array([obj.bearing.x, obj.bearing.y, obj.bearing.z])


def through_p(obj) -> np.ndarray:
    return ray((obj.centroid_x - P[0, 2]) / P[0, 0], (obj.centroid_y - P[1, 2]) / P[1, 1])


def through_k_and_d(obj) -> np.ndarray:
    x, y = cv2.undistortPoints(np.array([[[obj.centroid_x, obj.centroid_y]]]), K, D, None, None, None,
                               (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)).reshape(2)
    return ray(x, y)


def set_parameters(listener: Listener, *parameters: Parameter):
    """The node's SetParameters answer, one result per parameter."""
    request = SetParameters.Request(parameters=[p.to_parameter_msg() for p in parameters])
    return listener.call(SetParameters, f"{NODE}/set_parameters", request, timeout=60).results


def test_rectified_camera_bearing_goes_through_p(live):
    listener, node = live
    obj = located(listener, node)
    assert obj.frame_id == "lp_optical"
    assert np.allclose(bearing_of(obj), through_p(obj), atol=1e-6), (bearing_of(obj), through_p(obj))
    angle = np.degrees(np.arccos(np.clip(through_p(obj) @ through_k_and_d(obj), -1, 1)))
    assert angle > 0.5, f"P and K+D should disagree here, by {angle:.3f} deg"


def test_descriptors_carry_ranges_choices_and_liveness(live):
    listener, _ = live
    names = ["image_size", "overlay_alpha", "mode", "object_masks", "camera_rectified"]
    reply = listener.call(DescribeParameters, f"{NODE}/describe_parameters", DescribeParameters.Request(names=names))
    d = dict(zip(names, reply.descriptors))
    assert (d["image_size"].integer_range[0].from_value, d["image_size"].integer_range[0].step) == (64, 64)
    assert d["image_size"].type == ParameterType.PARAMETER_INTEGER and not d["image_size"].dynamic_typing
    assert "read-only after configure" in d["image_size"].additional_constraints
    r = d["overlay_alpha"].floating_point_range[0]
    assert (r.from_value, r.to_value) == (0.0, 1.0) and "live" in d["overlay_alpha"].additional_constraints
    assert "one of live, replay" in d["mode"].additional_constraints
    assert d["object_masks"].type == ParameterType.PARAMETER_BOOL
    assert "each one of auto, true, false" in d["camera_rectified"].additional_constraints
    assert d["camera_rectified"].type == ParameterType.PARAMETER_STRING_ARRAY


def test_a_live_parameter_is_applied_from_the_next_frame(live):
    listener, node = live
    before = frame(listener, node, 0)
    assert before.objects and all(o.mask.width == 0 for o in before.objects)  # object_masks false
    since = listener.count("/refseg/status")
    (result,) = set_parameters(listener, Parameter("object_masks", value=True))
    assert result.successful, result.reason
    listener.wait_status("parameters set: object_masks=True", since, node=node)
    after = frame(listener, node, 1)
    assert after.objects and all((o.mask.width, o.mask.height, o.mask.encoding) == (W, H, "mono8")
                                 for o in after.objects)
    assert get_parameters(listener, NODE, ["object_masks"]) == {"object_masks": True}


def test_a_read_only_parameter_is_refused_with_the_reason(live):
    listener, node = live
    since = listener.count("/refseg/status")
    (result,) = set_parameters(listener, Parameter("image_size", value=512))
    assert not result.successful
    assert "image_size is read-only after configure" in result.reason and "configure again" in result.reason
    assert "set_parameters refused: parameter image_size is read-only" in listener.wait_status(
        "set_parameters refused", since, node=node)
    assert get_parameters(listener, NODE, ["image_size"]) == {"image_size": 256}
    # Sending it back unchanged is not a change (tools that send every parameter back).
    (result,) = set_parameters(listener, Parameter("image_size", value=256))
    assert result.successful, result.reason
    assert node.alive() and frame(listener, node, 2).objects


def test_values_out_of_range_or_choices_are_refused(live):
    listener, node = live
    # rcl's own check, from the descriptor's range:
    (result,) = set_parameters(listener, Parameter("overlay_alpha", value=1.5))
    assert not result.successful and "out of range" in result.reason
    # the node's checks: choices, and rules that tie parameters together.
    (result,) = set_parameters(listener, Parameter("camera_rectified", value=["yes"]))
    assert not result.successful and "camera_rectified must be each one of auto, true, false" in result.reason
    (result,) = set_parameters(listener, Parameter("depth_min_range", value=150.0))
    assert not result.successful and "depth_min_range and depth_max_range must satisfy min < max" in result.reason
    assert get_parameters(listener, NODE, ["overlay_alpha", "depth_min_range"]) == {
        "overlay_alpha": 0.5, "depth_min_range": 0.0}
    assert node.alive()


def test_grounding_and_acquisition_thresholds_are_live_and_reach_the_caption_path(live):
    listener, node = live
    since = listener.count("/refseg/status")
    results = set_parameters(listener, Parameter("grounding_threshold", value=0.6),
                             Parameter("regrounding_interval", value=2.0))
    assert all(r.successful for r in results), [r.reason for r in results]
    for name, value in (("grounding_threshold", 0.6), ("regrounding_interval", 2.0)):  # one call each
        line = listener.wait_status(f"parameters set: {name}={value}", since, node=node)
        assert line.endswith("; caption path grounding uses them from the next frame"), line
    (result,) = set_parameters(listener, Parameter("acquisition_threshold", value=0.7))
    assert result.successful, result.reason  # no acquisition here: the node keeps it for its next configure
    (result,) = set_parameters(listener, Parameter("acquisition_m", value=4))
    assert not result.successful and "1 <= m <= k" in result.reason  # acquisition_k is 3
    (result,) = set_parameters(listener, Parameter("grounding_retry", value=-1.0))
    assert not result.successful and "out of range" in result.reason
    assert get_parameters(listener, NODE, ["grounding_threshold", "regrounding_interval", "acquisition_threshold",
                                           "acquisition_m", "grounding_retry"]) == {
        "grounding_threshold": 0.6, "regrounding_interval": 2.0, "acquisition_threshold": 0.7,
        "acquisition_m": 2, "grounding_retry": 0.0}
    assert node.alive()


def test_camera_rectified_changes_the_camera_model_live(live):
    listener, node = live
    (result,) = set_parameters(listener, Parameter("camera_rectified", value=["false"]))
    assert result.successful, result.reason
    obj = located(listener, node)
    assert np.allclose(bearing_of(obj), through_k_and_d(obj), atol=1e-6), (bearing_of(obj), through_k_and_d(obj))


def test_read_only_parameters_are_accepted_until_configure_and_unchanged_values_always():
    from refseg_ros.ros.params import Settings, changed_settings

    # Unconfigured (no settings yet): any valid value; configure will read it.
    assert changed_settings(None, [Parameter("image_size", value=512)]) is None
    with pytest.raises(ValueError, match="image_size must be in \\[64, 8192\\], a multiple of 64, got 100"):
        changed_settings(None, [Parameter("image_size", value=100)])
    current = Settings(cameras=[CAM], image_size=256)
    assert changed_settings(current, [Parameter("image_size", value=256)]) is None
    with pytest.raises(ValueError, match="parameters image_size, mode are read-only after configure"):
        changed_settings(current, [Parameter("image_size", value=512), Parameter("mode", value="replay"),
                                   Parameter("overlay_alpha", value=0.1)])
    new = changed_settings(current, [Parameter("overlay_alpha", value=0.1), Parameter("use_sim_time", value=True)])
    assert (new.overlay_alpha, current.overlay_alpha, new.image_size) == (0.1, 0.5, 256)
