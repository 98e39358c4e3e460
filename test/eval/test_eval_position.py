"""Position error in the evaluation report: a synthetic bag with exact depth and CameraInfo
(`synthetic_to_bag(depth=True)`), scored with a stand-in result source (the ground truth,
optionally shifted), so the expected numbers are known. No ROS."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg_ros.eval import bags, builders, depth, runner, synthetic
from refseg_ros.runtime import geometry
from support.evaluation import OracleSource, cfg

W, H, N = 96, 72, 8


@pytest.fixture(scope="module")
def depth_bag(tmp_path_factory):
    return builders.synthetic_to_bag(tmp_path_factory.mktemp("depth") / "bag", num_frames=N, height=H, width=W,
                                     depth=True)


def test_the_bag_holds_exact_depth_and_intrinsics(depth_bag):
    seq = synthetic.generate(N, H, W)
    with bags.BagReader(depth_bag) as reader:
        assert depth.has_depth(reader)
        intr = depth.read_intrinsics(reader)
        assert np.array_equal(intr.K, synthetic.intrinsics(H, W)) and not intr.distorted
        depths = depth.read_depths(reader, {seq.stamp_ns(i) for i in range(N)})
    assert len(depths) == N
    for i in range(N):
        assert np.array_equal(depths[seq.stamp_ns(i)], seq.depth(i))
        # The node's rule on a ground-truth mask gives the scene's exact point.
        for oid, truth in seq.positions(i).items():
            mask = seq.masks[i][oid]
            where = geometry.locate(mask, _box(mask), intr, seq.depth(i))
            assert np.abs(where.position.point - truth).max() < 1e-6


def _box(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_perfect_masks_have_no_position_error(tmp_path, depth_bag):
    out = runner.evaluate(cfg(depth_bag, tmp_path / "out"), source=OracleSource())
    s = out.report.summary
    assert s["position_pairs"] > 0 and s["position_missed"] == 0
    assert s["position_error_m_max"] == pytest.approx(0.0, abs=1e-9)
    assert any("Position error" in n for n in out.report.notes)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["summary"]["position_pairs"] == s["position_pairs"]
    assert "position_error_m_mean" in (tmp_path / "out" / "report.md").read_text()


def test_shifted_masks_have_the_expected_position_error(tmp_path, depth_bag):
    """Masks one pixel to the right: on a flat card (the object stays inside its card's
    depth when its mask's pixels all lie on it) the point moves by z / f sideways."""
    out = runner.evaluate(cfg(depth_bag, tmp_path / "out"), source=OracleSource(offset=1))
    s = out.report.summary
    assert s["position_pairs"] > 0 and s["position_error_m_max"] > 0
    f = synthetic.intrinsics(H, W)[0, 0]
    # The median depth under a shifted mask is still the card's wherever most of the mask
    # stays on it, so the error is the sideways step, z / f, there.
    steps = [min(abs(r["position_error_m"] - synthetic.OBJECT_DEPTHS[r["target_id"]] / f), 1.0)
             for r in out.report.frames if r.get("position_error_m") is not None]
    assert np.median(steps) < 1e-6


def test_missed_targets_are_counted(tmp_path, depth_bag):
    out = runner.evaluate(cfg(depth_bag, tmp_path / "out"), source=OracleSource(spoil=lambda i, t: t == 1))
    s = out.report.summary
    assert s["position_missed"] > 0
    assert all(r.get("position_error_m") is None for r in out.report.frames if r["target_id"] == 1)


def test_a_bag_without_depth_has_no_position_numbers(tmp_path):
    bag = builders.synthetic_to_bag(tmp_path / "bag", num_frames=3, height=H, width=W)
    out = runner.evaluate(cfg(bag, tmp_path / "out"), source=OracleSource())
    assert "position_pairs" not in out.report.summary
