"""End to end with the real engine (randomly initialised Hiera-T at 256 px, on the CPU):
bag -> engine replay -> scores -> report, for both protocols, plus the CLI.

Random weights make the scores meaningless; what is checked is that the pipeline runs
the real model, scores what it returns, and that a replay reproduces a stored run.
"""

from __future__ import annotations

import json

import pytest

from refseg_ros.eval import builders, cli, outdir, runner
from refseg_ros.eval.sources import EngineReplaySource, EngineSettings
from support.clips import write_fss_folder

SETTINGS = EngineSettings(image_size=256, device="cpu", seed=0)


@pytest.fixture(scope="module")
def engine():
    from refseg_ros.engine import EngineConfig, SegmentationEngine

    return SegmentationEngine.from_config(EngineConfig(model=SETTINGS.model, image_size=256,
                                                       device="cpu", seed=0))


@pytest.fixture(scope="module")
def video_bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine_video")
    return builders.synthetic_to_bag(d / "bag", num_frames=3, height=48, width=64, seed=0)


def cfg(bag, out, **kw):
    return runner.RunConfig(bag=bag, out=out, progress=False, engine=SETTINGS, **kw)


def check_scores(report):
    for r in report.frames:
        assert 0.0 <= r["j"] <= 1.0 and 0.0 <= r["f"] <= 1.0


def test_first_frame_gt_with_engine(tmp_path, video_bag, engine):
    out = runner.evaluate(cfg(video_bag, tmp_path / "out"), source=EngineReplaySource(SETTINGS,
                                                                                      engine))
    rep = out.report
    assert rep.summary["targets"] == 3 and rep.summary["scored_pairs"] == 3 * 2
    check_scores(rep)
    assert rep.info["source"]["random_weights"] is True
    assert any("random weights" in n for n in rep.notes)
    assert rep.latency["count"] == 3 and rep.latency["p50"] > 0
    assert (tmp_path / "out" / outdir.COMPLETE).exists()
    assert engine.streams() == []  # the episode's stream was removed

    # Pretend the run was interrupted after two frames: resuming replays the engine from
    # frame 0, reproduces the two stored frames bit for bit (mask digests) and adds the
    # third; the scores equal the uninterrupted run's.
    run_dir = outdir.RunDirectory(tmp_path / "out")
    (run_dir.path / outdir.INFERENCE_DONE).unlink()
    (run_dir.path / outdir.COMPLETE).unlink()
    run_dir.truncate_results(2)
    again = runner.evaluate(cfg(video_bag, tmp_path / "out"),
                            source=EngineReplaySource(SETTINGS, engine))
    assert again.resumed["frames_verified"] == 2 and again.resumed["frames_replaced"] == 0
    assert json.dumps(again.report.summary) == json.dumps(rep.summary)  # NaN-safe
    assert again.report.frames == rep.frames


def test_reference_topic_with_engine(tmp_path, video_bag, engine):
    out = runner.evaluate(cfg(video_bag, tmp_path / "out", prompt="reference-topic"),
                          source=EngineReplaySource(SETTINGS, engine))
    assert out.report.summary["scored_pairs"] == 3 * 3
    check_scores(out.report)
    records = outdir.RunDirectory(tmp_path / "out").read_results()
    assert [sorted(r["targets"]) for r in records] == [["1", "2", "3"]] * 3


def test_one_shot_with_engine(tmp_path, engine):
    write_fss_folder(tmp_path / "fss", pairs=2, seed=0, step=5)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=2)
    out = runner.evaluate(cfg(bag, tmp_path / "out"), source=EngineReplaySource(SETTINGS, engine))
    assert out.report.summary["episodes"] == 2
    assert 0.0 <= out.report.summary["miou"] <= 1.0
    assert 0.0 <= out.report.summary["fb_iou"] <= 1.0
    assert list(out.report.oneshot["class_iou"]) == ["blob"]


def test_cli_run(tmp_path, capsys):
    bag = builders.synthetic_to_bag(tmp_path / "bag", num_frames=2, height=32, width=48)
    argv = ["run", str(bag), "--out", str(tmp_path / "out"), "--image-size", "256",
            "--device", "cpu", "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.splitlines()[0])
    assert summary["targets"] == 3
    assert "report.md" in printed
    assert cli.main(argv) == 0  # a second call finds the finished run
    assert "already complete" in capsys.readouterr().out


def test_k_shot_episodes_pin_every_support_in_the_engine(tmp_path, engine, monkeypatch):
    """A 3-shot bag: the first support adds the target, the other two add examples."""
    write_fss_folder(tmp_path / "fss", pairs=4, seed=1, step=4)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=2, shots=3)
    pinned = []
    real_step = engine.step

    def step(stream, frame, stamp=0.0):  # what each query frame is segmented with
        pinned.append({tid: len(t.memory.conditioning) for tid, t in engine._streams[stream].targets.items()})
        return real_step(stream, frame, stamp)

    monkeypatch.setattr(engine, "step", step)
    out = runner.evaluate(cfg(bag, tmp_path / "out"), source=EngineReplaySource(SETTINGS, engine))
    assert out.report.summary["episodes"] == 2
    assert pinned == [{1: 3}, {1: 3}]


def test_a_prompt_the_model_cannot_see_is_scored_without_a_prediction(tmp_path, engine, caplog):
    """A 1-pixel support mask in a 960x720 picture vanishes at 256 px: the engine refuses it,
    the run goes on and scores that episode with no prediction, saying why in the log."""
    import cv2
    import numpy as np

    root = tmp_path / "fss" / "speck"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        cv2.imwrite(str(root / f"{k}.jpg"), rng.integers(0, 256, size=(720, 960, 3), dtype=np.uint8))
        mask = np.zeros((720, 960), np.uint8)
        mask[301, 401] = 255
        cv2.imwrite(str(root / f"{k}.png"), mask)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=1)
    with caplog.at_level("WARNING", logger="refseg_ros.eval"):
        out = runner.evaluate(cfg(bag, tmp_path / "out"), source=EngineReplaySource(SETTINGS, engine))
    assert out.report.summary["episodes"] == 1
    assert out.report.oneshot["class_iou"]["speck"] == 0.0
    assert any("refused" in r.getMessage() and "256x256" in r.getMessage() for r in caplog.records), caplog.text
