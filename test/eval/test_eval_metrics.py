"""J, F, sequence statistics, one-shot IoUs and latency against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refseg_ros.eval import metrics as m


def rect(shape, r0, r1, c0, c1):
    out = np.zeros(shape, bool)
    out[r0:r1, c0:c1] = True
    return out


# --- J ---------------------------------------------------------------------------


def test_j_partial_overlap():
    pred = rect((6, 6), 1, 3, 1, 3)  # 4 px
    gt = rect((6, 6), 1, 3, 1, 4)  # 6 px, contains pred
    assert m.region_similarity(pred, gt) == pytest.approx(4 / 6)


def test_j_empty_conventions():
    empty = np.zeros((5, 5), bool)
    full = rect((5, 5), 1, 3, 1, 3)
    assert m.region_similarity(empty, empty) == 1.0
    assert m.region_similarity(empty, full) == 0.0
    assert m.region_similarity(full, empty) == 0.0


def test_j_rejects_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        m.region_similarity(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# --- boundaries ------------------------------------------------------------------


def test_boundary_map_of_small_square_by_hand():
    mask = rect((5, 5), 1, 3, 1, 3)
    expected = np.zeros((5, 5), bool)
    for r, c in [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (1, 2), (2, 2), (2, 1)]:
        expected[r, c] = True
    np.testing.assert_array_equal(m.boundary_map(mask), expected)


def test_boundary_map_ignores_image_border():
    assert not m.boundary_map(np.ones((6, 7), bool)).any()
    left = rect((6, 7), 0, 6, 0, 3)  # touches top, bottom and left borders
    expected = np.zeros((6, 7), bool)
    expected[:, 2] = True  # only the edge inside the image
    np.testing.assert_array_equal(m.boundary_map(left), expected)


def test_tolerance_radius_from_diagonal():
    assert m.boundary_tolerance_px((100, 100)) == 2  # ceil(0.008 * 141.4) = ceil(1.13)
    assert m.boundary_tolerance_px((480, 854)) == 8  # ceil(7.84)
    assert m.boundary_tolerance_px((100, 100), bound_th=3) == 3


def test_disk_is_euclidean():
    d = m.disk(2)
    assert d.shape == (5, 5)
    assert d[0, 2] and d[2, 0] and d[1, 1]
    assert not d[0, 0] and not d[0, 1]  # sqrt(5) > 2


def test_f_empty_conventions():
    empty = np.zeros((20, 20), bool)
    obj = rect((20, 20), 5, 10, 5, 10)
    assert m.boundary_f(empty, empty) == 1.0
    assert m.boundary_f(empty, obj) == 0.0
    assert m.boundary_f(obj, empty) == 0.0
    assert m.boundary_f(obj, obj) == 1.0


@pytest.mark.parametrize("shift", [1, 2])
def test_f_shift_within_tolerance_is_perfect(shift):
    # 100x100: tolerance radius 2 px. Moving the whole mask by <= 2 px keeps every
    # boundary pixel within reach of the other boundary.
    gt = rect((100, 100), 20, 60, 20, 50)
    pred = np.roll(gt, shift, axis=1)
    assert m.boundary_f(pred, gt) == 1.0
    assert m.region_similarity(pred, gt) < 1.0


def test_f_edge_moved_beyond_tolerance_hand_computed():
    # Prediction: rows 20..59, cols 20..49 (h=40, w=30: 2h+2w = 140 boundary px).
    # Ground truth: its right edge 5 px further (cols 20..54: 150 boundary px).
    # Radius 2. Precision: the predicted right edge (col 49) is matched only in the
    # 2 rows below the top and 3 rows above the bottom -> 35 of 140 unmatched.
    # Recall: the true right edge (40 px), 3 px of the top row and 2 more of the
    # bottom row lie more than 2 px away -> 45 of 150 unmatched.
    pred = rect((100, 100), 20, 60, 20, 50)
    gt = rect((100, 100), 20, 60, 20, 55)
    s = m.boundary_score(pred, gt)
    assert s.precision == pytest.approx(105 / 140)
    assert s.recall == pytest.approx(105 / 150)
    assert s.f == pytest.approx(2 * 0.75 * 0.7 / 1.45)
    assert s.f < 1.0


def _brute_force_f(pred, gt, radius):
    pb, gb = m.boundary_map(pred), m.boundary_map(gt)
    pp, gp = np.argwhere(pb), np.argwhere(gb)

    def share_near(a, b):
        d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
        return float((d.min(1) <= radius).mean())

    prec, rec = share_near(pp, gp), share_near(gp, pp)
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


@pytest.mark.parametrize("seed", range(4))
def test_f_matches_brute_force_distance_check(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:60, :80]
    gt = (yy - 30) ** 2 / 15**2 + (xx - 40) ** 2 / 22**2 <= 1
    pred = (yy - 30 - rng.integers(-4, 5)) ** 2 / 13**2 + (xx - 38) ** 2 / 25**2 <= 1
    radius = m.boundary_tolerance_px(gt.shape)
    assert m.boundary_f(pred, gt) == pytest.approx(_brute_force_f(pred, gt, radius))


# --- sequences -------------------------------------------------------------------


def test_frame_and_sequence_statistics():
    scores = [m.FrameScore(j, f) for j, f in [(1.0, 0.8), (0.6, 0.4), (0.4, 0.2), (0.2, 0.0)]]
    assert scores[0].jf == pytest.approx(0.9)
    s = m.score_sequence(scores)
    assert s.frames == 4
    assert s.j_mean == pytest.approx(0.55)
    assert s.f_mean == pytest.approx(0.35)
    assert s.jf_mean == pytest.approx(0.45)
    assert s.j_recall == pytest.approx(0.5)  # 1.0 and 0.6 exceed 0.5
    assert s.f_recall == pytest.approx(0.25)
    # DAVIS toolkit bins of 4 frames: [0, 1], [1, 2], [2], [2, 3] -> (1.0 + 0.6) / 2 - (0.4 + 0.2) / 2
    assert s.j_decay == pytest.approx(0.5)


def test_overall_weights_targets_equally():
    a = m.score_sequence([m.FrameScore(1.0, 1.0)] * 10)
    b = m.score_sequence([m.FrameScore(0.0, 0.5)])
    summary = m.overall({1: a, 2: b})
    assert summary["j_mean"] == pytest.approx(0.5)
    assert summary["f_mean"] == pytest.approx(0.75)
    assert summary["jf_mean"] == pytest.approx(0.625)
    assert summary["targets"] == 2


# --- one-shot --------------------------------------------------------------------


def test_miou_and_fb_iou_accumulate_sums():
    acc = m.EpisodeAccumulator()
    # class a, episode 1: 4x4 images, gt 4 px, pred 4 px, overlap 2 -> I=2, U=6
    gt1 = rect((4, 4), 0, 2, 0, 2)
    pred1 = rect((4, 4), 0, 2, 1, 3)
    assert acc.add("a", pred1, gt1) == pytest.approx(2 / 6)
    # class a, episode 2: perfect, 3 px -> I=3, U=3
    gt2 = np.zeros((4, 4), bool)
    gt2[3, :3] = True
    acc.add("a", gt2, gt2)
    # class b: miss entirely: gt 4 px, pred empty -> I=0, U=4
    acc.add("b", np.zeros((4, 4), bool), rect((4, 4), 2, 4, 2, 4))
    assert acc.class_iou() == {"a": pytest.approx(5 / 9), "b": 0.0}
    assert acc.miou() == pytest.approx((5 / 9 + 0.0) / 2)
    # background: ep1 bg-inter = 16-6 = 10, bg-union = 16-2 = 14;
    # ep2 13/13; ep3 12/16 -> 35/43. Foreground: 5/13.
    assert acc.fb_iou() == pytest.approx((5 / 13 + 35 / 43) / 2)


def test_episode_accumulator_empty():
    assert math.isnan(m.EpisodeAccumulator().miou())
    assert math.isnan(m.EpisodeAccumulator().fb_iou())


# --- latency and drops -----------------------------------------------------------


def test_latency_percentiles_nearest_rank():
    lat = [i / 1000 for i in range(100, 0, -1)]  # 1..100 ms, unordered
    s = m.latency_summary(lat)
    assert s["count"] == 100
    assert s["p50"] == pytest.approx(0.050)
    assert s["p90"] == pytest.approx(0.090)
    assert s["p99"] == pytest.approx(0.099)
    assert s["max"] == pytest.approx(0.100)
    assert s["mean"] == pytest.approx(0.0505)
    assert m.latency_summary([])["count"] == 0


def test_dropped_frames():
    d = m.dropped_frames([1, 2, 3, 4], [3, 1, 99])
    assert d["dropped"] == 2 and d["dropped_stamps"] == [2, 4]
    assert d["with_result"] == 2 and d["drop_rate"] == 0.5
    assert m.dropped_frames([], [])["drop_rate"] == 0.0
