"""The evaluation runner with a stand-in result source: scoring, resume, bad input.

The stand-in answers with the ground truth (optionally spoiled), so every score is
known exactly; the real engine is exercised in test_eval_engine_runs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from refseg_ros.eval import bags, builders, outdir, plan, runner, scoring, synthetic
from support.evaluation import OracleSource, cfg


@pytest.fixture(scope="module")
def video_bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    return builders.synthetic_to_bag(d / "bag", num_frames=8, height=48, width=64, seed=0)


def test_perfect_results_score_one(tmp_path, video_bag):
    out = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource())
    s = out.report.summary
    assert s["jf_mean"] == 1.0 and s["j_mean"] == 1.0 and s["f_mean"] == 1.0
    assert s["targets"] == 3
    # first-frame-gt: every object is prompted on frame 0, which is not scored.
    assert s["scored_pairs"] == 3 * 7
    assert {r["frame"] for r in out.report.frames} == set(range(1, 8))
    assert (tmp_path / "out" / outdir.COMPLETE).exists()
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["per_target"]["1"]["label"] == "red disc"
    assert rep["latency"]["count"] == 8 and rep["latency"]["max"] == pytest.approx(0.008)
    assert rep["drops"]["dropped"] == 0
    assert rep["info"]["prompt"] == "first-frame-gt"


def test_spoiled_frames_give_exact_scores(tmp_path, video_bag):
    seq = synthetic.generate(num_frames=8, height=48, width=64, seed=0)
    # The disc's prediction is emptied on frames 1 and 2: J = F = 0 there when the disc
    # is visible, 1 when the ground truth is empty too.
    src = OracleSource(spoil=lambda i, t: t == 1 and i in (1, 2))
    out = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=src)
    disc = [r for r in out.report.frames if r["target_id"] == 1]
    expected = [0.0 if (i in (1, 2) and seq.masks[i][1].any()) else 1.0 for i in range(1, 8)]
    assert [r["j"] for r in disc] == expected
    assert out.report.per_target["1"]["j_mean"] == pytest.approx(np.mean(expected))
    assert out.report.per_target["2"]["j_mean"] == 1.0
    want = (np.mean(expected) + 2) / 3
    assert out.report.summary["j_mean"] == pytest.approx(want)


class BleedingSource(OracleSource):
    """The oracle, except that target 1's mask also covers target 2's pixels."""

    def results(self, plan_, reader, camera_topic, skip):
        for res in super().results(plan_, reader, camera_topic, skip):
            if 1 in res.masks and 2 in res.masks:
                res.masks[1] = res.masks[1] | res.masks[2]
            yield res


@pytest.mark.parametrize("overlaps", ["keep", "label-map"])
def test_overlapping_masks_are_scored_by_the_chosen_rule(tmp_path, video_bag, overlaps):
    seq = synthetic.generate(num_frames=8, height=48, width=64, seed=0)
    out = runner.evaluate(cfg(video_bag, tmp_path / "out", overlaps=overlaps), source=BleedingSource())
    j = {(r["frame"], r["target_id"]): r["j"] for r in out.report.frames}
    for i in range(1, 8):
        gt1, gt2 = seq.masks[i].get(1, np.zeros((48, 64), bool)), seq.masks[i].get(2, np.zeros((48, 64), bool))
        # Target 1 keeps every pixel of its mask under both rules (it has the smaller id).
        want1 = 1.0 if not (gt1 | gt2).any() else gt1.sum() / (gt1 | gt2).sum()
        assert j[(i, 1)] == pytest.approx(want1)
        if overlaps == "keep":
            assert j[(i, 2)] == 1.0  # its own mask is exact
        else:  # merged into one label map, target 2 loses all its pixels to target 1
            assert j[(i, 2)] == (0.0 if gt2.any() else 1.0)
        assert j[(i, 3)] == 1.0
    assert any(seq.masks[i].get(2, np.zeros(1, bool)).any() for i in range(1, 8)), "the check needs target 2 visible"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["info"]["overlaps"] == overlaps


def test_label_map_merge_gives_overlapped_pixels_to_the_smallest_id():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    c = np.array([[1, 1, 1, 1]], bool)
    merged = scoring.as_label_map({3: c, 1: a, 2: b})
    assert list(merged) == [3, 1, 2], "the caller's order is kept"
    assert merged[1].tolist() == [[True, True, False, False]]
    assert merged[2].tolist() == [[False, False, True, False]]
    assert merged[3].tolist() == [[False, False, False, True]]


def test_reference_topic_scores_every_frame(tmp_path, video_bag):
    out = runner.evaluate(cfg(video_bag, tmp_path / "out", prompt="reference-topic"),
                          source=OracleSource())
    assert out.report.summary["scored_pairs"] == 3 * 8
    assert out.report.info["prompt"] == "reference-topic"


def test_finished_run_is_not_redone(tmp_path, video_bag):
    runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource())
    src = OracleSource()
    again = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=src)
    assert again.report is None and again.resumed["finished"]
    assert src.calls == []


def test_resume_after_interruption_equals_fresh_run(tmp_path, video_bag):
    fresh = runner.evaluate(cfg(video_bag, tmp_path / "fresh"), source=OracleSource(offset=2))
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(cfg(video_bag, tmp_path / "out"),
                        source=OracleSource(offset=2, fail_after=5))
    run_dir = tmp_path / "out"
    assert not (run_dir / outdir.COMPLETE).exists() and not (run_dir / "report.json").exists()
    assert len(outdir.RunDirectory(run_dir).read_results()) == 5
    resumed = runner.evaluate(cfg(video_bag, run_dir), source=OracleSource(offset=2))
    # A video is one episode: replayed from frame 0, the 5 stored frames verified.
    assert resumed.resumed["frames_verified"] == 5 and resumed.resumed["frames_replaced"] == 0
    assert resumed.report.summary == fresh.report.summary
    assert resumed.report.frames == fresh.report.frames


def test_resume_with_diverging_replay_keeps_new_results(tmp_path, video_bag):
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource(fail_after=5))
    # The replay differs from frame 3 on: stored frames 3 and 4 are replaced.
    src = OracleSource(spoil=lambda i, t: i >= 3 and t == 2)
    resumed = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=src)
    fresh = runner.evaluate(cfg(video_bag, tmp_path / "fresh"),
                            source=OracleSource(spoil=lambda i, t: i >= 3 and t == 2))
    assert resumed.resumed["frames_verified"] == 3 and resumed.resumed["frames_replaced"] == 2
    assert resumed.report.summary == fresh.report.summary
    records = outdir.RunDirectory(tmp_path / "out").read_results()
    assert [r["frame"] for r in records] == list(range(8))


def test_finished_inference_is_reused(tmp_path, video_bag):
    runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource())
    (tmp_path / "out" / outdir.COMPLETE).unlink()
    (tmp_path / "out" / "report.json").unlink()
    src = OracleSource()
    again = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=src)
    assert again.resumed["inference_reused"] and src.calls == []
    assert again.report.summary["jf_mean"] == 1.0
    assert (tmp_path / "out" / outdir.COMPLETE).exists()


def test_other_run_in_output_dir_is_refused(tmp_path, video_bag):
    runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource())
    with pytest.raises(outdir.OutputDirError, match="different run"):
        runner.evaluate(cfg(video_bag, tmp_path / "out", max_frames=4), source=OracleSource())
    out = runner.evaluate(cfg(video_bag, tmp_path / "out", max_frames=4, overwrite=True),
                          source=OracleSource())
    assert out.report.summary["scored_pairs"] == 3 * 3


# --- one-shot --------------------------------------------------------------------


@pytest.fixture(scope="module")
def oneshot_bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("oneshot")
    import cv2

    rng = np.random.default_rng(0)
    for c in ("cat", "cup"):
        (d / "fss" / c).mkdir(parents=True)
        for k in range(1, 4):
            cv2.imwrite(str(d / "fss" / c / f"{k}.jpg"),
                        rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8))
            m = np.zeros((20, 24), np.uint8)
            m[k : k + 8, 2 * k : 2 * k + 9] = 255
            cv2.imwrite(str(d / "fss" / c / f"{k}.png"), m)
    return builders.fss_to_bag(d / "fss", d / "bag", episodes_per_class=2, seed=1)


def test_one_shot_miou(tmp_path, oneshot_bag):
    # Episode 1 (second 'cat' episode) answered with nothing: cat IoU = I/U summed over
    # its two episodes = a/(a + b) where a, b are the two ground-truth areas.
    src = OracleSource(spoil=lambda i, t: i == 1)
    out = runner.evaluate(cfg(oneshot_bag, tmp_path / "out"), source=src)
    with bags.BagReader(oneshot_bag) as r:
        areas = [int(lm.sum()) for _, lm in r.label_maps()]
    cat = areas[0] / (areas[0] + areas[1])
    assert out.report.oneshot["class_iou"] == {"cat": pytest.approx(cat), "cup": 1.0}
    assert out.report.summary["miou"] == pytest.approx((cat + 1) / 2)
    assert out.report.summary["episodes"] == 4
    assert src.calls == [0, 1, 2, 3]


def test_one_shot_resume_skips_finished_episodes(tmp_path, oneshot_bag):
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(cfg(oneshot_bag, tmp_path / "out"), source=OracleSource(fail_after=2))
    src = OracleSource()
    out = runner.evaluate(cfg(oneshot_bag, tmp_path / "out"), source=src)
    assert src.calls == [2, 3]  # episodes 0 and 1 were done
    assert out.resumed["episodes_skipped"] == 2
    assert out.report.summary["miou"] == 1.0


def test_one_shot_needs_references(tmp_path, oneshot_bag):
    with pytest.raises(plan.PlanError, match="reference-topic"):
        runner.evaluate(cfg(oneshot_bag, tmp_path / "out", prompt="first-frame-gt"),
                        source=OracleSource())
    assert not (tmp_path / "out").exists()


# --- bad input leaves no report ------------------------------------------------------


def assert_no_report(out: Path):
    assert not (out / outdir.COMPLETE).exists()
    assert not (out / "report.json").exists()
    assert not (out / "report.md").exists()


def test_caption_prompt_without_captions_fails_clearly(tmp_path):
    bag = builders.synthetic_to_bag(tmp_path / "bag", num_frames=2, height=32, width=32, captions=False)
    with pytest.raises(bags.BagError, match="has no topic '/refseg/caption'"):
        runner.evaluate(cfg(bag, tmp_path / "out", prompt="caption"), source=OracleSource())
    assert_no_report(tmp_path / "out")


def test_missing_topic_fails_before_writing(tmp_path, video_bag):
    with pytest.raises(bags.BagError) as err:
        runner.evaluate(cfg(video_bag, tmp_path / "out", camera_topic="/front/image"),
                        source=OracleSource())
    assert str(video_bag) in str(err.value) and "/front/image" in str(err.value)
    assert_no_report(tmp_path / "out")


def test_truncated_bag_fails_before_writing(tmp_path):
    bag = builders.synthetic_to_bag(tmp_path / "bag", num_frames=4, height=32, width=32)
    data = bag / "bag.mcap"
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    with pytest.raises(bags.BagError, match="truncated or corrupt"):
        runner.evaluate(cfg(bag, tmp_path / "out"), source=OracleSource())
    assert_no_report(tmp_path / "out")


def test_ground_truth_size_mismatch_fails_before_writing(tmp_path):
    seq = synthetic.generate(num_frames=2, height=32, width=40)
    with bags.BagWriter(tmp_path / "bag") as w:
        for i in range(2):
            w.write_image(bags.CAMERA_TOPIC, seq.stamp_ns(i), seq.frames[i])
            w.write_label_map(bags.GROUND_TRUTH_TOPIC, seq.stamp_ns(i), seq.label_map(i)[:, :20])
    with pytest.raises(bags.BagError, match="20x32 but the frame .* is 40x32"):
        runner.evaluate(cfg(tmp_path / "bag", tmp_path / "out"), source=OracleSource())
    assert_no_report(tmp_path / "out")


def test_bag_without_frames_fails_before_writing(tmp_path):
    with bags.BagWriter(tmp_path / "bag") as w:
        w._connection(bags.CAMERA_TOPIC, bags.IMAGE_TYPE)
        w._connection(bags.GROUND_TRUTH_TOPIC, bags.IMAGE_TYPE)
    with pytest.raises(bags.BagError, match="has no frames"):
        runner.evaluate(cfg(tmp_path / "bag", tmp_path / "out"), source=OracleSource())
    assert_no_report(tmp_path / "out")


def test_failure_after_inference_leaves_no_complete_marker(tmp_path, video_bag, monkeypatch):
    from refseg_ros.eval import report

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "plot_j_over_time", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        runner.evaluate(cfg(video_bag, tmp_path / "out"), source=OracleSource())
    assert_no_report(tmp_path / "out")
    assert (tmp_path / "out" / outdir.INFERENCE_DONE).exists()


def _bag_with_references(path, masks_and_ids):
    seq = synthetic.generate(num_frames=2, height=32, width=40)
    with bags.BagWriter(path) as w:
        for k, (tid, mask) in enumerate(masks_and_ids):
            w.write_reference(bags.REFERENCE_TOPIC, seq.stamp_ns(0) - 10 + k, tid, "x",
                              seq.frames[0], mask)
        for i in range(2):
            w.write_image(bags.CAMERA_TOPIC, seq.stamp_ns(i), seq.frames[i])
            w.write_label_map(bags.GROUND_TRUTH_TOPIC, seq.stamp_ns(i), seq.label_map(i))
    return seq


def test_reference_with_empty_mask_is_refused(tmp_path):
    _bag_with_references(tmp_path / "bag", [(1, np.zeros((32, 40), bool))])
    with pytest.raises(plan.PlanError, match="target 1.*empty mask"):
        runner.evaluate(cfg(tmp_path / "bag", tmp_path / "out", prompt="reference-topic"),
                        source=OracleSource())
    assert_no_report(tmp_path / "out")


def test_several_references_for_one_target_teach_it_k_shot(tmp_path):
    m = np.zeros((32, 40), bool)
    m[5:10, 5:10] = True
    _bag_with_references(tmp_path / "bag", [(1, m), (1, ~m)])
    with bags.BagReader(tmp_path / "bag") as reader:
        (episode,) = plan.make_plan(reader, prompt="reference-topic").episodes
    assert [(p.target_id, bool(p.mask[6, 6])) for p in episode.prompts] == [(1, True), (1, False)]
    out = runner.evaluate(cfg(tmp_path / "bag", tmp_path / "out", prompt="reference-topic"),
                          source=OracleSource())
    # Target 1 is scored once per frame, not once per reference.
    assert [(r["frame"], r["target_id"]) for r in out.report.frames] == [(0, 1), (1, 1)]
    assert out.report.summary["j_mean"] == 1.0
