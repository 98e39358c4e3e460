"""Where the target is, over real DDS: RGB-D cameras (test/support/depth_camera.py: the synthetic
scene with exact depth and intrinsics, its CameraInfo and aligned depth) in their own
processes, the node in another, a listener here.

The model has random weights, so its masks are not the scene's objects; the ground truth
a target's position is checked against is therefore the exact depth of the scene under
the node's own published mask (object_masks: true): the median of the exact depths of the
mask's pixels, on the ray through the mask's centroid through the scene's K. Where the
mask is an object's, that is the object's card depth on its centroid ray, the scene's
`object_positions`.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from geometry_msgs.msg import PointStamped
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import Marker, MarkerArray

from refseg_ros.eval import synthetic
from refseg_ros.msg import SegmentedObjectArray
from support.node_harness import (Listener, depth_topic, image_msg, info_topic, start_node, start_rgbd,
                                  teach_scene_object)

W, H, FRAMES = 320, 240, 12
RGBD, LATE, NOINFO, BAD = "/rgbd/image_raw", "/late/image_raw", "/noinfo/image_raw", "/bad/image_raw"


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geometry")
    listener = Listener("geometry_listener")
    listener.listen_status()
    for cam in (RGBD, LATE, NOINFO, BAD):
        listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    listener.listen(f"{RGBD}/refseg/markers", MarkerArray)
    listener.listen(f"{RGBD}/refseg/target_1/point", PointStamped)
    procs = []
    try:
        node = start_node(tmp, {
            "cameras": [RGBD, LATE, NOINFO, BAD],
            "camera_info_topics": [info_topic(RGBD), info_topic(LATE), "", info_topic(BAD)],
            "depth_topics": [depth_topic(c) for c in (RGBD, LATE, NOINFO, BAD)],
            "depth_stamp_tolerance": 0.05, "object_masks": True,
            "point_targets": "[1]",  # an integer array on the command line
            "store_dir": "", "status_repeat_period": 0.0})
        procs.append(node)
        listener.wait_status("active", timeout=90, node=node)
        teach_scene_object(listener, node)
        procs.append(start_rgbd(tmp, RGBD, info_topic(RGBD), depth_topic(RGBD), "rgbd", gt=tmp / "rgbd.gt"))
        procs.append(start_rgbd(tmp, LATE, info_topic(LATE), depth_topic(LATE), "late", encoding="16UC1",
                                depth_offset=0.25))  # half the frame period: never within the tolerance
        procs.append(start_rgbd(tmp, NOINFO, "", depth_topic(NOINFO), "noinfo"))
        yield listener, node, tmp
    finally:
        for proc in reversed(procs):
            proc.stop()
        listener.close()


def arrays(listener: Listener, cam: str) -> list[SegmentedObjectArray]:
    return [m for _, m in listener.received(f"{cam}/refseg/objects")]


def visible(msg: SegmentedObjectArray) -> list:
    return [o for o in msg.objects if o.area > 0]


def wait_visible(listener: Listener, node, cam: str, count: int = 3) -> list[SegmentedObjectArray]:
    return listener.wait_for(lambda: (lambda got: got if len(got) >= count else None)(
        [m for m in arrays(listener, cam) if visible(m)]), 180, f"{count} arrays on {cam} with a visible target", node)


def mask_of(obj) -> np.ndarray:
    m = obj.mask
    return np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.step)[:, :m.width] != 0


def test_positions_equal_the_scenes_ground_truth(rgbd):
    listener, node, tmp = rgbd
    got = wait_visible(listener, node, RGBD, 3)
    frames = {(int(s), int(n)): int(i) for s, n, i in
              (line.split() for line in (tmp / "rgbd.gt").read_text().splitlines())}
    clip = synthetic.generate(FRAMES, H, W)
    K = clip.K
    checked = 0
    for msg in got:
        index = frames[(msg.header.stamp.sec, msg.header.stamp.nanosec)]
        depth = clip.depth(index)
        for obj in visible(msg):
            mask = mask_of(obj)
            rows, cols = np.nonzero(mask)
            assert obj.area == rows.size
            u, v = cols.mean(), rows.mean()
            assert (obj.centroid_x, obj.centroid_y) == pytest.approx((u, v), abs=1e-3)
            ray = np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
            assert obj.has_bearing and obj.frame_id == "rgbd_optical"
            assert np.allclose([obj.bearing.x, obj.bearing.y, obj.bearing.z], ray / np.linalg.norm(ray), atol=1e-6)
            z = float(np.median(depth[mask]))
            assert obj.has_position and obj.depth_pixels == rows.size
            assert np.allclose([obj.position.x, obj.position.y, obj.position.z], ray * z, atol=1e-3)
            checked += 1
    assert checked >= 3

    # The listed target's point and the markers carry the same position.
    points = listener.wait_for(lambda: listener.received(f"{RGBD}/refseg/target_1/point"), 30, "points", node)
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in got}
    for _, point in points:
        msg = by_stamp.get((point.header.stamp.sec, point.header.stamp.nanosec))
        if msg is not None:
            obj = next(o for o in msg.objects if o.target_id == 1)
            assert (point.point.x, point.point.y, point.point.z) == (obj.position.x, obj.position.y, obj.position.z)
            assert point.header.frame_id == "rgbd_optical"
    markers = listener.wait_for(
        lambda: [m for _, m in listener.received(f"{RGBD}/refseg/markers") if len(m.markers) > 1],
        30, "a marker array with a located target", node)
    kinds = [mk.type for mk in markers[-1].markers]
    assert markers[-1].markers[0].action == Marker.DELETEALL
    assert kinds[1:] == [Marker.SPHERE, Marker.TEXT_VIEW_FACING]
    assert markers[-1].markers[1].header.frame_id == "rgbd_optical"


def test_depth_with_other_stamps_is_not_paired(rgbd):
    listener, node, _ = rgbd
    got = wait_visible(listener, node, LATE, 2)
    for msg in got:
        for obj in visible(msg):
            assert obj.has_bearing and not obj.has_position and obj.depth_pixels == 0


def test_without_camera_info_the_bearing_flag_is_unset(rgbd):
    listener, node, _ = rgbd
    got = wait_visible(listener, node, NOINFO, 2)
    for msg in got:
        for obj in visible(msg):
            assert obj.area > 0 and not obj.has_bearing and not obj.has_position
            assert (obj.bearing.x, obj.bearing.y, obj.bearing.z) == (0.0, 0.0, 0.0)


# ------------------------------------------------------------------------ bad input
def _send(listener: Listener, node, info: CameraInfo | None, depth: Image | None, t: int) -> tuple[int, int]:
    """One frame of the scene on BAD, with its CameraInfo and depth; its stamp."""
    clip = _send.clip = getattr(_send, "clip", None) or synthetic.generate(FRAMES, H, W)
    stamp = listener.node.get_clock().now().to_msg()
    if info is not None:
        info.header.stamp = stamp
        listener.publish_when_heard(info_topic(BAD), CameraInfo, info, node=node)
    if depth is not None:
        depth.header.stamp = stamp
        listener.publish_when_heard(depth_topic(BAD), Image, depth, node=node)
    time.sleep(0.2)
    listener.publish_when_heard(BAD, Image, image_msg(clip.frames[t % FRAMES], "rgb8", "bad_optical", stamp), node=node)
    return stamp.sec, stamp.nanosec


def _good_info() -> CameraInfo:
    from support.depth_camera import camera_info

    return camera_info(synthetic.intrinsics(H, W), W, H, "bad_optical", None)


def _depth(array: np.ndarray, encoding: str) -> Image:
    dtype = {"32FC1": np.float32, "16UC1": np.uint16, "8UC1": np.uint8}[encoding]
    a = np.ascontiguousarray(array, dtype)
    return Image(height=a.shape[0], width=a.shape[1], encoding=encoding, step=a.shape[1] * a.itemsize,
                 data=a.tobytes())


def _result_for(listener: Listener, node, stamp, what: str, timeout: float = 120) -> SegmentedObjectArray | None:
    def find():
        for m in arrays(listener, BAD):
            if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp:
                return m
        return None

    return listener.wait_for(find, timeout, f"the objects of the frame with {what}", node)


def _send_processed(listener: Listener, node, make_info, make_depth, t: int, what: str) -> SegmentedObjectArray:
    """Send a frame (with fresh CameraInfo and depth) until the node has published its
    objects: the node takes images best effort, so on a busy machine one may be lost."""
    for attempt in range(3):
        stamp = _send(listener, node, make_info(), make_depth(), t)
        try:
            return _result_for(listener, node, stamp, what, timeout=40 if attempt < 2 else 120)
        except AssertionError:
            if attempt == 2 or not node.alive():
                raise
    raise AssertionError("unreachable")


@pytest.mark.parametrize("case", ["k_all_zero", "unknown_encoding", "other_size_without_info", "nan_only"])
def test_bad_geometry_input_is_reported_and_the_rest_goes_on(rgbd, case):
    listener, node, _ = rgbd
    since = listener.count("/refseg/status")
    depth_ok = lambda: _depth(synthetic.generate(FRAMES, H, W).depth(1), "32FC1")  # noqa: E731

    def zero_k():
        info = _good_info()
        info.k = [0.0] * 9
        return info

    if case == "k_all_zero":
        msg = _send_processed(listener, node, zero_k, depth_ok, 1, case)
        words = "K is all zero"
    elif case == "unknown_encoding":
        msg = _send_processed(listener, node, _good_info, lambda: _depth(np.full((H, W), 7), "8UC1"), 1, case)
        words = "depth encoding '8UC1' is not supported"
    elif case == "other_size_without_info":
        # A CameraInfo that is refused leaves the camera without one.
        msg = _send_processed(listener, node, zero_k, lambda: _depth(np.full((H // 2, W // 2), 1.5), "32FC1"), 1, case)
        words = "no valid CameraInfo has arrived"
    else:
        msg = _send_processed(listener, node, _good_info, lambda: _depth(np.full((H, W), np.nan), "32FC1"), 1, case)
        words = "has no valid pixel"
    listener.wait_status(words, since, timeout=60, node=node)
    assert msg.header.frame_id == "bad_optical"
    for obj in msg.objects:
        assert not obj.has_position
        if case == "k_all_zero":
            assert not obj.has_bearing
    assert node.alive()
    # The other cameras go on.
    n = len(arrays(listener, RGBD))
    listener.wait_for(lambda: len(arrays(listener, RGBD)) > n, 60, f"more arrays on {RGBD}", node)


def test_a_good_frame_after_bad_input_is_located_again(rgbd):
    listener, node, _ = rgbd
    clip = synthetic.generate(FRAMES, H, W)
    for attempt in range(6):
        msg = _send_processed(listener, node, _good_info, lambda attempt=attempt: _depth(clip.depth(attempt), "32FC1"),
                              attempt, "good input")
        if visible(msg):
            for obj in visible(msg):
                assert obj.has_bearing and obj.has_position
            return
    pytest.skip("the random-weight model showed no mask on BAD in 6 frames")


def test_depth_of_half_the_size_is_scaled_by_the_camera_info(rgbd):
    """Registered depth at 160x120 for 320x240 frames: with the colour CameraInfo it is
    brought to the frame (nearest neighbour), and the position is that of the depth the
    node sees: the exact depth's every other pixel, repeated."""
    listener, node, _ = rgbd
    clip = synthetic.generate(FRAMES, H, W)
    K = clip.K
    for attempt in range(6):
        half = clip.depth(attempt)[::2, ::2]
        msg = _send_processed(listener, node, _good_info, lambda half=half: _depth(half, "32FC1"), attempt,
                              "half-size depth")
        if not visible(msg):
            continue
        seen = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)
        for obj in visible(msg):
            mask = mask_of(obj)
            rows, cols = np.nonzero(mask)
            ray = np.array([(cols.mean() - K[0, 2]) / K[0, 0], (rows.mean() - K[1, 2]) / K[1, 1], 1.0])
            assert obj.has_position
            z = float(np.median(seen[mask]))
            assert np.allclose([obj.position.x, obj.position.y, obj.position.z], ray * z, atol=1e-3)
        return
    pytest.skip("the random-weight model showed no mask on BAD in 6 frames")
