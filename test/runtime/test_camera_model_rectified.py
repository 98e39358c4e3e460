"""Raw and rectified camera models: a rectified image is seen through CameraInfo's P with
no distortion, a raw one through K and D (refseg_ros/runtime/geometry.py), checked against
OpenCV: the same 3D point, projected into the raw image (projectPoints with K and D) and
into the rectified image (P), must give the same bearing through each model; and a
rectified pixel read through K and D (the old behaviour) must not.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from refseg_ros.runtime import geometry

W, H = 640, 480
K = np.array([[525.0, 0.0, 331.0], [0.0, 520.0, 243.0], [0.0, 0.0, 1.0]])
D = np.array([-0.28, 0.09, 0.0012, -0.0008, -0.012])  # plumb_bob, a wide-angle lens


def rectified_projection(tx: float = 0.0) -> np.ndarray:
    """P as camera_calibration writes it for this K, D: OpenCV's new camera matrix (alpha 0,
    every rectified pixel valid), so fx', cx', ... differ from K's; Tx in the fourth column."""
    new_k, _ = cv2.getOptimalNewCameraMatrix(K, D, (W, H), 0.0)
    P = np.zeros((3, 4))
    P[:, :3] = new_k
    P[0, 3] = tx
    return P


# Points in the optical frame, metres: on the axis, off to each side, near the corners.
POINTS = np.array([[0.0, 0.0, 2.0], [0.4, -0.2, 1.5], [-0.9, 0.6, 2.5], [1.1, 0.8, 3.0], [-0.3, -0.7, 1.2]])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(unit(a), unit(b)), -1.0, 1.0))))


def test_projection_differs_from_k_so_the_choice_matters():
    P = rectified_projection()
    assert abs(P[0, 0] - K[0, 0]) > 20 and abs(P[0, 2] - K[0, 2]) > 1, P


@pytest.mark.parametrize("tx", [0.0, -525.0 * 0.12])  # monocular; the right camera of a 12 cm stereo pair
def test_rectified_pixels_give_the_points_bearing_through_p(tx):
    P = rectified_projection(tx)
    rect = geometry.Intrinsics.from_projection(P.reshape(-1), W, H)
    assert np.array_equal(rect.K, P[:, :3]) and not rect.distorted and rect.D.size == 0
    # The rectified image of each point, by OpenCV: P's 3x3 part, no distortion.
    uv_rect, _ = cv2.projectPoints(POINTS, np.zeros(3), np.zeros(3), P[:, :3], None)
    uv_rect = uv_rect.reshape(-1, 2)
    for point, (u, v) in zip(POINTS, uv_rect):
        ray = geometry.bearing(rect, u, v)
        assert np.allclose(ray, unit(point), atol=1e-9), (point, ray)
        # OpenCV's own inverse of that projection agrees.
        x, y = cv2.undistortPoints(np.array([[[u, v]]]), P[:, :3], None).reshape(2)
        assert np.allclose(ray, unit(np.array([x, y, 1.0])), atol=1e-12)
    # locate_all takes the same path for several targets at once (those in the image).
    uv_rect = uv_rect[(uv_rect[:, 0] >= 0) & (uv_rect[:, 0] < W) & (uv_rect[:, 1] >= 0) & (uv_rect[:, 1] < H)]
    assert len(uv_rect) >= 3
    masks = [np.zeros((H, W), bool) for _ in uv_rect]
    for mask, (u, v) in zip(masks, np.round(uv_rect).astype(int)):
        mask[v, u] = True
    located = geometry.locate_all(masks, [(0, 0, W - 1, H - 1)] * len(masks), rect)
    for where, (u, v) in zip(located, np.round(uv_rect)):
        x, y = cv2.undistortPoints(np.array([[[u, v]]]), P[:, :3], None).reshape(2)
        assert np.allclose(where.bearing, unit(np.array([x, y, 1.0])), atol=1e-12)


def test_raw_pixels_give_the_points_bearing_through_k_and_d():
    raw = geometry.Intrinsics.from_fields(K.reshape(-1), D, W, H, "plumb_bob")
    uv_raw, _ = cv2.projectPoints(POINTS, np.zeros(3), np.zeros(3), K, D)
    for point, (u, v) in zip(POINTS, uv_raw.reshape(-1, 2)):
        assert np.allclose(geometry.bearing(raw, u, v), unit(point), atol=1e-7)


def test_the_same_target_raw_or_rectified_has_one_bearing_and_k_d_on_a_rectified_pixel_is_wrong():
    P = rectified_projection()
    raw = geometry.Intrinsics.from_fields(K.reshape(-1), D, W, H, "plumb_bob")
    rect = geometry.Intrinsics.from_projection(P.reshape(-1), W, H)
    uv_raw, _ = cv2.projectPoints(POINTS, np.zeros(3), np.zeros(3), K, D)
    # image_proc's rectification of those pixels: undistort with K, D, re-project with P.
    uv_rect = cv2.undistortPoints(uv_raw, K, D, None, None, P[:, :3],
                                  (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-12)).reshape(-1, 2)
    worst = 0.0
    for point, (ur, vr), (u, v) in zip(POINTS, uv_raw.reshape(-1, 2), uv_rect):
        assert angle_deg(geometry.bearing(rect, u, v), geometry.bearing(raw, ur, vr)) < 1e-5
        worst = max(worst, angle_deg(geometry.bearing(raw, u, v), point))
    assert worst > 1.0, f"K and D on rectified pixels should be degrees off, worst {worst:.3f} deg"


def test_an_unusable_projection_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="P is all zero"):
        geometry.Intrinsics.from_projection([0.0] * 12)
    with pytest.raises(ValueError, match="9 values, needs 12"):
        geometry.Intrinsics.from_projection([1.0] * 9)
    bad = rectified_projection()
    bad[1, 1] = -1.0
    with pytest.raises(ValueError, match="fy=-1"):
        geometry.Intrinsics.from_projection(bad.reshape(-1))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        geometry.Intrinsics.from_projection(bad.reshape(-1))


@pytest.mark.parametrize("topic, rectified", [
    ("camera/image_rect", True), ("/stereo/left/image_rect_color", True), ("cam/image_rect/compressed", True),
    ("camera/color/image_rect_raw", True), ("front/rectified", True), ("camera/image_raw", False),
    ("camera/image_color", False), ("direction/image_raw", False), ("rect/image_raw", False),
    ("camera/image_raw/compressed", False)])
def test_topic_names_say_whether_images_are_rectified(topic, rectified):
    assert geometry.is_rectified_topic(topic) is rectified


def test_camera_info_conversion_picks_p_or_k_and_d():
    from sensor_msgs.msg import CameraInfo

    from refseg_ros.ros.conversions import intrinsics_from_camera_info

    P = rectified_projection()
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=list(D), k=list(K.reshape(-1)),
                     p=list(P.reshape(-1)))
    raw, rect = intrinsics_from_camera_info(msg), intrinsics_from_camera_info(msg, rectified=True)
    assert np.array_equal(raw.K, K) and np.array_equal(raw.D, D)
    assert np.array_equal(rect.K, P[:, :3]) and rect.D.size == 0 and (rect.width, rect.height) == (W, H)


def test_camera_rectified_setting_per_camera():
    from refseg_ros.ros.params import Settings

    s = Settings(cameras=["a/image_rect", "b/image_raw", "c/image_raw", "d/image_rect_color"],
                 camera_rectified=["auto", "false", "true"])
    assert [s.rectified(i) for i in range(4)] == [True, False, True, True]
    s.check()
    s = Settings(cameras=["a/image_rect"], camera_rectified=["false"])
    assert not s.rectified(0)
    with pytest.raises(ValueError, match="camera_rectified must be each one of auto, true, false, got 'yes'"):
        Settings(cameras=["a/image_rect"], camera_rectified=["yes"]).check()
    with pytest.raises(ValueError, match="camera_rectified has 2 entries for 1 camera"):
        Settings(cameras=["a/image_rect"], camera_rectified=["true", "true"]).check()
