"""Target geometry (refseg_ros.runtime.geometry) against hand-computed cases, and the depth
pairing buffer (refseg_ros.runtime.pairing). No ROS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refseg_ros.runtime import geometry as g
from refseg_ros.runtime.pairing import StampBuffer, cdr_header_stamp_ns

K640 = [600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0]


def pinhole(width=641, height=481, f=600.0):
    """A camera whose principal point is a pixel centre (odd size): the axis pixel exists."""
    return g.Intrinsics.from_fields([f, 0, (width - 1) / 2, 0, f, (height - 1) / 2, 0, 0, 1], [0.0] * 5,
                                    width, height)


def pixel_rays(intr: g.Intrinsics) -> np.ndarray:
    """H x W x 3 rays (x/z, y/z, 1) of every pixel centre of an undistorted camera."""
    yy, xx = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
    K = intr.K
    return np.stack([(xx - K[0, 2]) / K[0, 0], (yy - K[1, 2]) / K[1, 1], np.ones_like(xx)], axis=-1)


# ------------------------------------------------------------------------- centroid
def test_centroid_of_a_rectangle_is_its_middle_and_area_its_pixel_count():
    mask = np.zeros((480, 640), bool)
    mask[100:150, 200:301] = True  # rows 100..149, columns 200..300
    c = g.mask_centroid(mask)
    assert (c.u, c.v, c.area) == (250.0, 124.5, 50 * 101)
    assert g.mask_centroid(mask, box=(200, 100, 300, 149)) == c


def test_centroid_of_two_single_pixels_and_of_an_l_shape():
    mask = np.zeros((10, 10), bool)
    mask[2, 3] = mask[6, 9] = True
    assert g.mask_centroid(mask) == g.Centroid(6.0, 4.0, 2)
    mask = np.zeros((10, 10), bool)
    mask[0:3, 0] = True  # (0,0) (0,1) (0,2) as (u, v)
    mask[2, 1:3] = True  # (1,2) (2,2)
    c = g.mask_centroid(mask)
    assert c.area == 5 and c.u == pytest.approx(3 / 5) and c.v == pytest.approx(7 / 5)


def test_centroid_of_an_empty_mask_is_zero():
    assert g.mask_centroid(np.zeros((5, 7), bool)) == g.Centroid(0.0, 0.0, 0)


# -------------------------------------------------------------------------- bearing
def test_bearing_with_zero_distortion_is_the_normalised_k_inverse_ray():
    intr = g.Intrinsics.from_fields(K640, [0.0] * 5, 640, 480)
    assert np.allclose(g.bearing(intr, 320, 240), [0, 0, 1])
    ray = g.bearing(intr, 920, 240)  # 600 px right of the centre at f=600: 45 degrees
    assert np.allclose(ray, [math.sqrt(0.5), 0, math.sqrt(0.5)])
    ray = g.bearing(intr, -280, 840)  # left and down, outside the image: still a ray
    assert np.allclose(ray, np.array([-1.0, 1.0, 1.0]) / math.sqrt(3))
    assert np.linalg.norm(g.bearing(intr, 17.3, 401.9)) == pytest.approx(1.0)


def test_bearing_with_distortion_inverts_opencvs_projection():
    for model, d in (("plumb_bob", [-0.28, 0.09, 0.0012, -0.0008, -0.015]),
                     ("rational_polynomial", [0.4, -0.1, 0.001, 0.002, 0.01, 0.7, -0.05, 0.02]),
                     ("equidistant", [0.05, -0.01, 0.002, -0.0005])):
        intr = g.Intrinsics.from_fields(K640, d, 640, 480, model)
        rng = np.random.default_rng(1)
        points = np.column_stack([rng.uniform(-0.4, 0.4, 50), rng.uniform(-0.3, 0.3, 50), rng.uniform(0.8, 4, 50)])
        uv = g.project(intr, points)
        for (u, v), p in zip(uv, points):
            assert np.allclose(g.bearing(intr, u, v), p / np.linalg.norm(p), atol=1e-7), model


def test_distortion_matters_off_centre():
    plain = g.Intrinsics.from_fields(K640, [0.0] * 5, 640, 480)
    barrel = g.Intrinsics.from_fields(K640, [-0.3, 0.1, 0, 0, 0], 640, 480)
    assert np.allclose(g.bearing(barrel, 320, 240), [0, 0, 1])  # the centre does not move
    assert not np.allclose(g.bearing(barrel, 600, 400), g.bearing(plain, 600, 400), atol=1e-3)


@pytest.mark.parametrize("k, d, model, words", [
    ([0.0] * 9, [], "plumb_bob", "all zero"),
    ([1.0] * 8, [], "plumb_bob", "9"),
    ([600, 0, 320, 0, float("nan"), 240, 0, 0, 1], [], "plumb_bob", "NaN"),
    ([-600, 0, 320, 0, 600, 240, 0, 0, 1], [], "plumb_bob", "focal"),
    (K640, [0.1, 0.2, 0.3], "plumb_bob", "3 values"),
    (K640, [0.1] * 5, "double_sphere", "not supported"),
])
def test_bad_camera_info_is_refused_with_a_reason(k, d, model, words):
    with pytest.raises(ValueError, match=words):
        g.Intrinsics.from_fields(k, d, 640, 480, model)


# ------------------------------------------------------------------------- position
def test_position_on_a_plane_at_1_5_m():
    intr = pinhole()
    depth = np.full((intr.height, intr.width), 1.5, np.float32)
    mask = np.zeros(depth.shape, bool)
    mask[300:341, 450:521] = True  # centroid (485, 320)
    c = g.mask_centroid(mask)
    ray = g.bearing(intr, c.u, c.v)
    pos = g.mask_position(depth, mask, ray)
    expected = 1.5 * np.array([(485 - 320) / 600, (320 - 240) / 600, 1.0])
    assert np.abs(pos.point - expected).max() < 1e-3
    assert pos.valid_pixels == mask.sum() and pos.depth == pytest.approx(1.5)


def test_position_of_a_sphere_nearest_point_and_median():
    """A sphere of radius r centred on the optical axis at distance c, rendered exactly.

    The percentile 0 gives the nearest surface point (0, 0, c - r). For the median: a
    pixel's normalised ray (x, y, 1), s^2 = x^2 + y^2, meets the sphere at
    z(s) = (c - sqrt(c^2 - (1 + s^2)(c^2 - r^2))) / (1 + s^2), increasing in s. Pixels are
    uniform in the image plane, so s^2 is uniform on [0, s_max^2], s_max^2 = r^2/(c^2 - r^2)
    (the silhouette), and the median depth is z(sqrt(s_max^2 / 2)).
    """
    intr = pinhole()
    c, r = 2.0, 0.3
    rays = pixel_rays(intr)
    s2 = rays[..., 0] ** 2 + rays[..., 1] ** 2
    disc = c * c - (1 + s2) * (c * c - r * r)
    mask = disc >= 0
    depth = np.full(s2.shape, np.nan, np.float32)
    depth[mask] = ((c - np.sqrt(disc[mask])) / (1 + s2[mask])).astype(np.float32)
    cen = g.mask_centroid(mask)
    ray = g.bearing(intr, cen.u, cen.v)
    assert np.allclose(ray, [0, 0, 1])

    nearest = g.mask_position(depth, mask, ray, percentile=0)
    assert np.abs(nearest.point - [0, 0, c - r]).max() < 1e-3

    s2_med = r * r / (c * c - r * r) / 2
    z_med = (c - math.sqrt(c * c - (1 + s2_med) * (c * c - r * r))) / (1 + s2_med)
    median = g.mask_position(depth, mask, ray)
    assert abs(median.point[2] - z_med) < 1e-3 and np.abs(median.point[:2]).max() < 1e-9
    assert median.valid_pixels == mask.sum()


def test_position_of_an_off_axis_sphere_lies_on_its_bearing():
    intr = pinhole()
    centre, r = np.array([0.4, -0.2, 2.5]), 0.25
    rays = pixel_rays(intr)
    # |t*d - C|^2 = r^2 with d = (x, y, 1): the near root is the depth z = t.
    a = (rays ** 2).sum(-1)
    b = (rays * centre).sum(-1)
    disc = b * b - a * (centre @ centre - r * r)
    mask = disc >= 0
    depth = np.full(a.shape, np.nan, np.float32)
    depth[mask] = ((b[mask] - np.sqrt(disc[mask])) / a[mask]).astype(np.float32)
    cen = g.mask_centroid(mask)
    ray = g.bearing(intr, cen.u, cen.v)
    pos = g.mask_position(depth, mask, ray, percentile=0)
    # The smallest z on a sphere is its centre's z less r (the point facing the image plane).
    assert abs(pos.depth - (centre[2] - r)) < 1e-3
    assert np.allclose(np.cross(pos.point, ray), 0, atol=1e-12)


def test_invalid_depth_pixels_are_ignored_in_both_encodings():
    intr = pinhole()
    mm = np.full((intr.height, intr.width), 1500, np.uint16)
    mask = np.zeros(mm.shape, bool)
    mask[200:260, 300:360] = True
    mm[200:230, 300:360] = 0  # holes: half the mask
    metres = g.depth_to_metres(mm, "16UC1")
    ray = g.bearing(intr, 329.5, 229.5)
    pos = g.mask_position(metres, mask, ray)
    assert pos.valid_pixels == 30 * 60 and pos.point[2] == pytest.approx(1.5, abs=1e-6)

    f = np.full(mm.shape, 1.5, np.float32)
    f[200:210, 300:360] = np.nan
    f[210:220, 300:360] = np.inf
    f[220:225, 300:360] = -np.inf
    f[225:230, 300:360] = 0.0
    f[230:235, 300:360] = 40.0  # beyond max_range
    f[235:240, 300:360] = 0.05  # nearer than min_range
    pos = g.mask_position(g.depth_to_metres(f, "32FC1"), mask, ray, min_range=0.1, max_range=10.0)
    assert pos.valid_pixels == 20 * 60 and pos.depth == pytest.approx(1.5)


def test_all_invalid_mask_gives_no_position():
    mask = np.ones((20, 20), bool)
    for depth in (np.zeros((20, 20), np.uint16),):
        assert g.mask_position(g.depth_to_metres(depth, "16UC1"), mask, [0, 0, 1]) == g.Position(None, 0.0, 0)
    nan = np.full((20, 20), np.nan, np.float32)
    assert g.mask_position(g.depth_to_metres(nan, "32FC1"), mask, [0, 0, 1]).point is None
    assert g.mask_position(np.ones((20, 20), np.float32), np.zeros((20, 20), bool), [0, 0, 1]).point is None


def test_percentile_is_a_parameter():
    depth = np.arange(1, 101, dtype=np.float32).reshape(10, 10)  # 1..100 m
    mask = np.ones((10, 10), bool)
    assert g.mask_position(depth, mask, [0, 0, 1], percentile=0).depth == 1.0
    assert g.mask_position(depth, mask, [0, 0, 1], percentile=100).depth == 100.0
    assert g.mask_position(depth, mask, [0, 0, 1], percentile=50).depth == pytest.approx(50.5)


def test_depth_encodings_and_fields():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    assert np.allclose(g.depth_to_metres(mm, "16UC1"), [[np.nan, 1.0], [1.5, 65.535]], equal_nan=True)
    with pytest.raises(ValueError, match="not supported"):
        g.depth_to_metres(mm, "rgb8")
    f = np.array([[1.25, 2.0]], np.float32)
    big = f.astype(">f4").tobytes()
    assert np.array_equal(g.depth_image_array("32FC1", 1, 2, 8, True, big), f)
    padded = np.zeros((2, 6), np.uint8)
    padded[:, :4] = mm.view(np.uint8).reshape(2, 4) if np.little_endian else mm.byteswap().view(np.uint8).reshape(2, 4)
    assert np.array_equal(g.depth_image_array("16UC1", 2, 2, 6, False, padded.tobytes()), mm)
    with pytest.raises(ValueError, match="not supported"):
        g.depth_image_array("bgr8", 2, 2, 6, False, padded.tobytes())


def test_depth_of_another_size_is_scaled_or_refused():
    half = np.arange(12, dtype=np.float32).reshape(3, 4)
    full = g.fit_depth(half, 6, 8)
    assert full.shape == (6, 8) and full[5, 7] == half[2, 3] and full[0, 1] == half[0, 0]
    assert g.fit_depth(half, 3, 4) is half
    with pytest.raises(ValueError, match="aspect ratio"):
        g.fit_depth(half, 6, 6)


# -------------------------------------------------------------------------- pairing
def test_pairing_takes_the_closest_stamp_within_the_tolerance():
    buf = StampBuffer(capacity=3)
    for stamp in (100, 200, 300, 400):
        buf.put(stamp, f"d{stamp}")
    assert len(buf) == 3  # 100 is gone
    assert buf.closest(290, 20) == (300, "d300")
    assert buf.closest(250, 50) == (200, "d200")  # tie: the earlier
    assert buf.closest(350, 49) is None
    assert buf.closest(100, 50) is None  # forgotten
    assert buf.closest(460, 60) == (400, "d400")
    buf.put(300, "again")
    assert buf.closest(300, 0) == (300, "again")
    buf.clear()
    assert buf.closest(300, 1000) is None


def test_cdr_header_stamp_of_a_serialized_message():
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    msg = Image(encoding="16UC1")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 987_654_321
    assert cdr_header_stamp_ns(serialize_message(msg)) == 1_700_000_123_987_654_321
    with pytest.raises(ValueError):
        cdr_header_stamp_ns(b"\x00\x01")


def test_percentile_of_equals_numpys_linear_percentile():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 1001):
        values = rng.uniform(0.3, 5.0, n).astype(np.float32)
        for p in (0, 12.5, 50, 73, 100):
            assert g.percentile_of(values, p) == pytest.approx(float(np.percentile(values, p)), abs=1e-6)


def test_locate_all_equals_locate_per_target():
    intr = g.Intrinsics.from_fields(K640, [-0.28, 0.09, 0.001, -0.001, -0.01], 640, 480)
    depth = np.random.default_rng(0).uniform(0.5, 4, (480, 640)).astype(np.float32)
    masks, boxes = [], []
    for k in range(4):
        m = np.zeros((480, 640), bool)
        m[40 * k:40 * k + 30, 100 * k:100 * k + 50] = True
        masks.append(m)
        boxes.append((100 * k, 40 * k, 100 * k + 49, 40 * k + 29))
    masks.append(None)
    boxes.append(None)
    together = g.locate_all(masks, boxes, intr, depth, 30.0)
    for m, b, t in zip(masks, boxes, together):
        one = g.locate(m, b, intr, depth, 30.0)
        assert one.centroid == t.centroid
        if one.bearing is None:
            assert t.bearing is None and t.position is None
        else:
            assert np.allclose(one.bearing, t.bearing, atol=1e-12)
            assert np.allclose(one.position.point, t.position.point)
            assert one.position.valid_pixels == t.position.valid_pixels
    assert g.locate_all(masks, boxes, None, depth)[0].bearing is None


def test_pairing_forgets_depth_no_later_frame_can_use():
    buf = StampBuffer(capacity=10)
    for stamp in (100, 200, 300, 400):
        buf.put(stamp, stamp)
    assert buf.forget_before(250) == 2
    assert len(buf) == 2 and buf.closest(200, 60) is None and buf.closest(300, 0) == (300, 300)
    assert buf.forget_before(0) == 0
