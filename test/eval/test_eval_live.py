"""Live evaluation: the node in replay mode over DDS gives the offline engine's masks.

Both modes run the same randomly initialised Hiera-T (128 px, CPU, seed 0) on a small
synthetic bag. The engine is deterministic on the CPU and the live mode teaches the node
exactly as the offline replay teaches the engine, so the masks are compared bit for bit
and the per-frame J and F must be equal, not merely close. One exception, by design:
under first-frame-gt the node learns a target after it has processed the target's prompt
frame, so that frame's live result lacks the target; the protocol never scores it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg_ros.eval import builders, cli, outdir, runner
from refseg_ros.eval.live import LiveEvalError, LiveNodeSource, LiveSettings, check_reproducible
from refseg_ros.eval.node_outputs import NodeObject, NodeOutput, object_masks
from refseg_ros.eval.plan import EvalPlan, Episode, TargetPrompt
from refseg_ros.eval.sources import EngineReplaySource, EngineSettings
from support.clips import write_fss_folder

SETTINGS = EngineSettings(image_size=128, device="cpu", seed=0)
FRAMES = 10


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("live_bag")
    return builders.synthetic_to_bag(d / "bag", num_frames=FRAMES, height=120, width=160, seed=0)


def _masks_by_frame(out_dir):
    run = outdir.RunDirectory(out_dir)
    return {int(r["frame"]): run.load_masks(int(r["frame"])) for r in run.read_results()}


def _jf(report):
    return [(r["frame"], r["target_id"], r["j"], r["f"]) for r in report.frames]


def test_offline_and_live_give_identical_masks_and_scores(tmp_path, bag):
    pytest.importorskip("rclpy")
    offline = runner.evaluate(runner.RunConfig(bag=bag, out=tmp_path / "offline",
                                               progress=False, engine=SETTINGS),
                              source=EngineReplaySource(SETTINGS))
    live = runner.evaluate(runner.RunConfig(bag=bag, out=tmp_path / "live", progress=False,
                                            engine=SETTINGS),
                           source=LiveNodeSource(SETTINGS, LiveSettings(
                               log_path=tmp_path / "live" / "node.log")))
    assert (tmp_path / "live" / outdir.COMPLETE).exists()

    # Identical per-frame J and F: exact equality, since the masks are identical.
    assert _jf(live.report) == _jf(offline.report)
    assert len(live.report.frames) == offline.report.summary["scored_pairs"] > 0
    assert json.dumps(live.report.summary) == json.dumps(offline.report.summary)

    off_masks = _masks_by_frame(tmp_path / "offline")
    live_masks = _masks_by_frame(tmp_path / "live")
    assert sorted(off_masks) == sorted(live_masks) == list(range(FRAMES))
    prompt_frames = {(p.on_frame, p.target_id) for p in _plan(bag).episodes[0].prompts}
    compared = 0
    for frame, masks in off_masks.items():
        for tid, mask in masks.items():
            if (frame, tid) in prompt_frames:
                assert tid not in live_masks[frame]  # the node learnt it after this frame
                continue
            assert np.array_equal(live_masks[frame][tid], mask), (frame, tid)
            compared += 1
        assert set(live_masks[frame]) <= set(masks)
    assert compared >= (FRAMES - 1) * 3

    # Timing and drops of the live run, from the node's outputs and /diagnostics.
    lat = live.report.latency
    assert lat["count"] == FRAMES and lat["p50"] > 0 and "DDS" in lat["what"]
    source = live.report.info["source"]
    assert source["mode"] == "live" and source["random_weights"] is True
    assert source["end_to_end_latency"]["count"] == FRAMES
    assert source["end_to_end_latency"]["p50"] > 0
    assert source["node_diagnostics"]["frames_processed"] == FRAMES
    assert live.report.drops["dropped"] == 0 and live.report.drops["node_frames_dropped"] == 0
    assert source["node"]["exit_status"] == 0  # stopped cleanly (SIGINT)
    assert "node_frames_dropped" in (tmp_path / "live" / "report.json").read_text()


def test_cli_live_reference_topic_matches_offline(tmp_path, bag, capsys):
    """--mode live through the CLI, references taught over the node's reference topic."""
    pytest.importorskip("rclpy")
    common = ["--prompt", "reference-topic", "--image-size", "128", "--device", "cpu",
              "--no-progress"]
    assert cli.main(["run", str(bag), "--out", str(tmp_path / "off"), *common]) == 0
    assert cli.main(["run", str(bag), "--out", str(tmp_path / "live"), "--mode", "live",
                     *common]) == 0
    capsys.readouterr()
    off = json.loads((tmp_path / "off" / "report.json").read_text())
    live = json.loads((tmp_path / "live" / "report.json").read_text())
    assert [(r["frame"], r["target_id"], r["j"], r["f"]) for r in live["frames"]] == \
        [(r["frame"], r["target_id"], r["j"], r["f"]) for r in off["frames"]]
    off_masks, live_masks = _masks_by_frame(tmp_path / "off"), _masks_by_frame(tmp_path / "live")
    for frame, masks in off_masks.items():
        assert sorted(masks) == sorted(live_masks[frame]) == [1, 2, 3]
        for tid, mask in masks.items():
            assert np.array_equal(live_masks[frame][tid], mask), (frame, tid)
    assert (tmp_path / "live" / "node.log").exists()
    # A live run is not an offline run: the same folder is refused without --overwrite.
    assert cli.main(["run", str(bag), "--out", str(tmp_path / "live"), *common]) == \
        cli.EXIT_BAD_INPUT
    assert "different run" in capsys.readouterr().err


@pytest.mark.parametrize("shots", [1, 2])
def test_one_shot_episodes_live_match_offline(tmp_path, shots):
    """Few-shot: the references of each episode (the node gets the second one with
    add_view), the node's targets reset in between."""
    pytest.importorskip("rclpy")
    write_fss_folder(tmp_path / "fss", classes=("blob", "cube"), pairs=3, seed=0, step=5)
    bag = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=2, shots=shots)
    cfg = dict(bag=bag, progress=False, engine=SETTINGS)
    off = runner.evaluate(runner.RunConfig(out=tmp_path / "off", **cfg),
                          source=EngineReplaySource(SETTINGS))
    live = runner.evaluate(runner.RunConfig(out=tmp_path / "live", **cfg),
                           source=LiveNodeSource(SETTINGS))
    assert live.report.summary["episodes"] == 4
    assert json.dumps(live.report.summary) == json.dumps(off.report.summary)
    off_masks, live_masks = _masks_by_frame(tmp_path / "off"), _masks_by_frame(tmp_path / "live")
    assert sorted(off_masks) == sorted(live_masks)
    for frame, masks in off_masks.items():
        assert sorted(masks) == sorted(live_masks[frame])
        for tid, mask in masks.items():
            assert np.array_equal(live_masks[frame][tid], mask), (frame, tid)


def test_live_node_that_cannot_start(tmp_path, bag, capsys):
    """A bad node parameter: a clear error naming the bag and topic, with the node's own
    reason, and no report marked complete. (A value out of a parameter's range, such as
    --image-size 96, is refused by refseg-eval's parser before: test_parameter_spec.py.)"""
    pytest.importorskip("rclpy")
    out = tmp_path / "out"
    code = cli.main(["run", str(bag), "--out", str(out), "--source", "live", "--model", "sam2.1_hiera_x",
                     "--device", "cpu", "--no-progress", "--startup-timeout", "120"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert str(bag) in err and "/camera/image_raw" in err
    assert "exited with status 1 before it became active" in err
    assert "unknown model 'sam2.1_hiera_x'" in err
    assert not (out / outdir.COMPLETE).exists() and not (out / outdir.INFERENCE_DONE).exists()


# ------------------------------------------------------------------ without ROS

def test_object_masks_prefer_the_objects_own_masks():
    labels = np.zeros((4, 5), np.uint16)
    labels[0, :2] = 11
    labels[1, :] = 12  # target 12 painted over part of target 11's own mask
    own = np.zeros((4, 5), bool)
    own[:2, :2] = True
    out = NodeOutput(7, labels, [NodeObject(11, 11, 0.9, "tracked", own),
                                 NodeObject(12, 12, 0.8, "tracked"),
                                 NodeObject(13, 0, 0.1, "lost")])
    masks = object_masks(out)
    assert masks[11].tolist() == own.tolist()  # whole, overlap included
    assert masks[12].tolist() == (labels == 12).tolist()  # from the label image
    assert not masks[13].any()
    with pytest.raises(ValueError, match="mask value 2, not its target id"):
        object_masks(NodeOutput(7, labels, [NodeObject(12, 2, 0.8, "tracked")]))
    with pytest.raises(ValueError, match="label image"):
        object_masks(NodeOutput(7, labels, [NodeObject(11, 11, 0.9, "tracked", own[:3])]))


def test_plans_the_node_cannot_reproduce_are_refused():
    mask = np.ones((2, 2), bool)
    ref = TargetPrompt(1, "a", 10, mask, image=np.zeros((2, 2, 3), np.uint8))
    on_frame = TargetPrompt(2, "b", 10, mask, on_frame=0)
    plan = EvalPlan("video", "mixed", [10, 20], None, [Episode(0, "s", [0, 1], [ref, on_frame])],
                    {1: "a", 2: "b"})
    with pytest.raises(LiveEvalError, match="both references and masks"):
        check_reproducible(plan)
    plan.episodes[0].prompts = [TargetPrompt(2, "b", 15, mask, on_frame=0)]
    with pytest.raises(LiveEvalError, match="lies on no frame"):
        check_reproducible(plan)
    plan.episodes[0].prompts = [on_frame]
    check_reproducible(plan)


class _SilentNode:
    """Stands in for the node process and its client: alive, never answering."""

    returncode = None

    def alive(self):
        return True

    def log_tail(self, lines=25):
        return "[INFO] still loading"

    def stop(self, grace=10.0):
        return 0

    def errors(self):
        return []

    def status_lines(self, since=0):
        return []

    def take(self, stamp):
        return None

    def wait(self, timeout):
        import time

        time.sleep(timeout)

    def close(self):
        pass


def test_missing_results_are_an_error_naming_bag_topic_and_frames(tmp_path):
    from collections import deque
    from types import SimpleNamespace

    from refseg_ros.eval.live import LiveSession

    reader = SimpleNamespace(path=tmp_path / "some.bag",
                             require_topic=lambda topic, types: "sensor_msgs/msg/Image")
    session = LiveSession(SETTINGS, LiveSettings(result_timeout=0.3), reader, "/cam/image")
    session.proc = session.client = _SilentNode()
    session.inflight = deque([(3, 300, 0), (4, 400, 0)])
    with pytest.raises(LiveEvalError) as err:
        session.collect()
    text = str(err.value)
    assert "some.bag" in text and "'/cam/image'" in text
    assert "no result from the node within 0 s for 2 frame(s) sent: frames 3, 4" in text
    assert "still loading" in text  # the node's log tail
    session.close()
    assert not session.tmp.exists()


def _plan(bag) -> EvalPlan:
    from refseg_ros.eval import bags
    from refseg_ros.eval.plan import make_plan

    with bags.BagReader(bag) as reader:
        return make_plan(reader)


def test_unpaired_outputs_are_bounded_and_reported(monkeypatch):
    """A label image whose object list never comes is dropped once MAX_UNPAIRED wait, with
    an error that fails the run, instead of being kept for the whole evaluation."""
    from sensor_msgs.msg import Image

    from refseg_ros.msg import SegmentedObjectArray
    from refseg_ros.eval import eval_client

    monkeypatch.setattr(eval_client, "MAX_UNPAIRED", 4)
    client = eval_client.ReplayClient("nobody", "/unpaired/image_raw", "sensor_msgs/msg/Image", "unpaired")
    try:
        def labels(stamp: int) -> Image:
            msg = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(6))
            msg.header.stamp.sec = stamp
            return msg

        for stamp in range(1, 7):
            client._on_labels(labels(stamp))
        assert sorted(client._labels) == [3 * 10**9, 4 * 10**9, 5 * 10**9, 6 * 10**9]
        assert client.errors() == [f"label image at stamp {s * 10**9} never got its partner; dropped"
                                   for s in (1, 2)]
        objects = SegmentedObjectArray()
        objects.header.stamp.sec = 5
        client._on_objects(objects)
        paired = client.take(5 * 10**9)
        assert paired is not None and paired.labels.shape == (2, 3) and paired.objects == []
        assert 5 * 10**9 not in client._labels
    finally:
        client.close()
