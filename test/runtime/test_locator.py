"""The camera locator (refseg_ros.runtime.locator), without ROS: calibration from a
CameraInfo's fields, geometry of a frame's results equal to geometry.locate per target, and
the notes that say which calibration and depth problems apply (the node says them once on
its status topic: test_node_geometry.py checks that over DDS)."""

from __future__ import annotations

import numpy as np
import pytest

from refseg_ros.engine import TargetResult, TargetState
from refseg_ros.runtime import geometry
from refseg_ros.runtime.locator import Locator

H, W = 48, 64
K = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]


def good() -> geometry.Intrinsics:
    return geometry.Intrinsics.from_fields(K, [0.0] * 5, W, H, "plumb_bob")


def results() -> list[TargetResult]:
    """Two visible targets (rectangles) and one not visible."""
    out = []
    for tid, (x0, y0, x1, y1) in ((1, (4, 6, 20, 30)), (2, (40, 10, 60, 40))):
        mask = np.zeros((H, W), bool)
        mask[y0:y1 + 1, x0:x1 + 1] = True
        out.append(TargetResult(tid, f"t{tid}", mask, 0.9, (x0, y0, x1, y1), TargetState.TRACKED))
    out.append(TargetResult(3, "t3", np.zeros((H, W), bool), 0.1, None, TargetState.LOST))
    return out


def locate(locator: Locator, depth=None, problem=None, height: int = H, width: int = W):
    return locator.locate(results(), height, width, depth, 50.0, 0.1, 10.0, problem)


def test_the_same_calibration_again_is_not_read_again_and_a_bad_one_is_refused():
    locator = Locator("cam/info", "cam/depth")
    built = []

    def build():
        built.append(1)
        return good()

    assert locator.calibrate("a", build) == {"camera_info": None}
    assert locator.calibrate("a", build) == {}
    assert len(built) == 1 and locator.intrinsics is not None

    def bad():
        raise ValueError("K is all zero")

    notes = locator.calibrate("b", bad)
    assert notes == {"camera_info": "CameraInfo on cam/info refused: K is all zero"}
    assert locator.intrinsics is None
    assert locator.calibrate("a", build) == {"camera_info": None} and locator.intrinsics is not None
    locator.reset()
    assert locator.intrinsics is None and locator.calibrate("a", build) == {"camera_info": None}


def test_geometry_equals_geometry_locate_per_target():
    locator = Locator()
    locator.calibrate("k", good)
    depth = np.full((H, W), 1.5, np.float32)
    depth[:, 40:] = 2.5
    located, notes = locate(locator, depth)
    for result, where in zip(results(), located):
        expected = geometry.locate(result.mask if result.box else None, result.box, good(), depth, 50.0, 0.1, 10.0)
        assert where.centroid == expected.centroid
        if expected.bearing is None:
            assert where.bearing is None and where.position is None
            continue
        np.testing.assert_allclose(where.bearing, expected.bearing, atol=1e-12)
        np.testing.assert_allclose(where.position.point, expected.position.point, atol=1e-9)
    assert located[0].position.point[2] == pytest.approx(1.5) and located[1].position.point[2] == pytest.approx(2.5)
    assert notes == {"camera_info_size": None, "depth_decode": None, "depth_size": None, "depth_empty": None}


def test_without_intrinsics_or_depth_only_centroids_and_bearings():
    locator = Locator()
    located, notes = locate(locator)
    assert [w.bearing for w in located] == [None, None, None] and located[0].centroid.area > 0
    assert notes == {"camera_info_size": None}
    locator.calibrate("k", good)
    located, _ = locate(locator)
    assert located[0].bearing is not None and located[0].position is None


def test_calibration_for_another_image_size_gives_no_bearing():
    locator = Locator("cam/info")
    locator.calibrate("k", good)
    located, notes = locate(locator, height=H * 2, width=W * 2)
    assert all(w.bearing is None for w in located)
    assert notes["camera_info_size"] == (f"CameraInfo on cam/info is for {W}x{H} images, the frames are "
                                         f"{W * 2}x{H * 2}: no bearing or position")


def test_depth_problems_are_noted_by_kind():
    locator = Locator("cam/info", "cam/depth")
    located, notes = locate(locator, problem="could not deserialize a depth Image (3 bytes)")
    assert notes["depth_decode"] == "depth on cam/depth not used: could not deserialize a depth Image (3 bytes)"
    assert "depth_size" not in notes and located[0].position is None
    # another size: refused without intrinsics, scaled with them
    half = np.full((H // 2, W // 2), 1.5, np.float32)
    _, notes = locate(locator, half)
    assert notes["depth_size"].startswith(f"depth on cam/depth not used: depth image is {W // 2}x{H // 2}")
    assert "depth_decode" not in notes  # a decode problem said before is not cleared by a size problem
    locator.calibrate("k", good)
    located, notes = locate(locator, half)
    assert notes["depth_size"] is None and notes["depth_decode"] is None
    assert located[0].position.point[2] == pytest.approx(1.5)
    _, notes = locate(locator, np.full((H, W // 3), 1.5, np.float32))
    assert "aspect ratio" in notes["depth_size"]
    _, notes = locate(locator, np.full((H, W), np.nan, np.float32))
    assert notes["depth_empty"] == ("depth image on cam/depth has no valid pixel (all 0, NaN, inf or outside "
                                    "[0.1, 10] m): no position")
