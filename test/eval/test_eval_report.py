"""Reports: valid PNG plots, strict JSON, markdown links, and `.complete` written last."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from refseg_ros.eval import outdir, report, synthetic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sample_data():
    seq = synthetic.generate(num_frames=6, height=60, width=80, seed=2)
    frames, series = [], []
    for i in range(6):
        series.append({"frame": i, "seconds": 0.01 * (i + 1)})
        for tid, label in ((1, "red disc"), (2, "blue square")):
            frames.append({"frame": i, "stamp_ns": seq.stamp_ns(i), "target_id": tid,
                           "label": label, "j": 1 - 0.1 * i, "f": 0.5})
    overlays = [report.Overlay(f"frame {i}", seq.frames[i], np.roll(seq.masks[i][1], 3, 1),
                               seq.masks[i][1], report.target_colour(0)) for i in (0, 5)]
    return report.ReportData(
        title="test report",
        info={"bag": "/x/bag", "engine": {"random_weights": True}},
        summary={"jf_mean": 0.6, "j_mean": 0.7, "f_mean": 0.5, "j_decay": float("nan")},
        per_target={"1": {"label": "red disc", "frames": 6, "jf_mean": 0.6, "j_mean": 0.7,
                          "f_mean": 0.5, "j_recall": 1.0, "f_recall": 0.0,
                          "j_decay": float("nan")}},
        frames=frames,
        latency={"what": "engine step time", "count": 6, "p50": 0.03, "p90": 0.05,
                 "p99": 0.06, "max": 0.06, "mean": 0.035},
        latency_series=series,
        drops={"sent": 6, "with_result": 6, "dropped": 0},
        overlays=overlays,
        notes=["random weights"],
    )


def test_report_files_are_valid(tmp_path):
    md = report.write_report(tmp_path, sample_data())
    assert md == tmp_path / "report.md"
    for name in ("j_over_time.png", "latency.png", "worst_frames.png"):
        path = tmp_path / "plots" / name
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
        import matplotlib.image

        assert matplotlib.image.imread(str(path)).ndim == 3
        assert f"plots/{name}" in md.read_text()

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    rep = json.loads((tmp_path / "report.json").read_text(), parse_constant=no_nan)
    assert rep["summary"]["jf_mean"] == 0.6 and rep["summary"]["j_decay"] is None
    assert len(rep["frames"]) == 12
    text = md.read_text()
    assert "| jf_mean | 0.600 |" in text and "random weights" in text
    assert (tmp_path / outdir.COMPLETE).exists()
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_overlay_draws_prediction_and_contour():
    img = np.full((40, 400, 3), 100, np.uint8)
    gt = np.zeros((40, 400), bool)
    gt[10:30, 10:30] = True
    pred = np.zeros_like(gt)
    pred[0:5, 0:5] = True
    out = report.overlay_image(img, pred, gt, (255, 0, 0))
    assert out[2, 2, 0] > 150 and out[2, 2, 2] < 100  # prediction tinted red
    assert (out[10, 10:30] == 255).all()  # white contour along the ground truth's edge
    assert (out[20, 20] == 100).all()  # inside untouched


def test_failed_report_leaves_no_complete_marker(tmp_path, monkeypatch):
    report.write_report(tmp_path, sample_data())
    assert (tmp_path / outdir.COMPLETE).exists()

    def boom(*_args, **_kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "plot_overlays", boom)
    with pytest.raises(RuntimeError):
        report.write_report(tmp_path, sample_data())
    assert not (tmp_path / outdir.COMPLETE).exists()  # the stale marker went first


def test_report_without_frames(tmp_path):
    data = report.ReportData(title="empty", info={}, summary={"jf_mean": math.nan})
    report.write_report(tmp_path, data)
    assert (tmp_path / "plots" / "worst_frames.png").read_bytes().startswith(PNG_SIGNATURE)


def test_atomic_write_and_results_file(tmp_path):
    run = outdir.RunDirectory(tmp_path / "run")
    assert run.claim({"bag": "a"}) is False
    run.append_results([{"frame": 0}, {"frame": 1}])
    with open(run.results_path, "a") as fh:
        fh.write('{"frame": 2, "tor')  # a crash mid-line
    assert [r["frame"] for r in run.read_results()] == [0, 1]
    run.append_results([{"frame": 2}])
    assert [r["frame"] for r in run.read_results()] == [0, 1, 2]
    run.truncate_results(1)
    assert [r["frame"] for r in run.read_results()] == [0]
    masks = {1: np.eye(5, 7, dtype=bool), 4: np.zeros((5, 7), bool)}
    run.save_masks(3, masks)
    back = run.load_masks(3)
    assert sorted(back) == [1, 4]
    np.testing.assert_array_equal(back[1], masks[1])
    assert outdir.mask_digest(back[1]) == outdir.mask_digest(masks[1])
    assert outdir.mask_digest(back[1]) != outdir.mask_digest(back[4])
    # Same run again: kept; a different run: refused, unless overwriting.
    assert run.claim({"bag": "a"}) is True
    with pytest.raises(outdir.OutputDirError, match="different run.*bag"):
        run.claim({"bag": "b"})
    (tmp_path / "run" / "mine.txt").write_text("keep me")
    assert run.claim({"bag": "b"}, overwrite=True) is False
    assert not run.results_path.exists()
    assert (tmp_path / "run" / "mine.txt").exists()
