"""The node's ROS-free parts, without processes: target store, frame mailbox, label image
and overlay, target registry (against a stand-in engine), message conversions, QoS."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from refseg_ros.engine import EngineError, InvalidPromptError, TargetResult, TargetState
from refseg_ros.runtime.mailbox import Closed, FrameMailbox
from refseg_ros.runtime.registry import CAPTION_WAITING, TargetRegistry, TeachError, camera_key
from refseg_ros.runtime.render import label_image, overlay
from refseg_ros.runtime.stats import CameraStats
from refseg_ros.store import TargetStore, TaughtTarget


# ------------------------------------------------------------------------------ store
def reference(tid=0, label="mug", camera="", h=24, w=32):
    image = np.random.default_rng(tid).integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    mask[4:12, 5:20] = True
    return TaughtTarget(tid, label, "reference", camera=camera, image=image, mask=mask)


def test_store_round_trip_and_ids(tmp_path):
    store = TargetStore(tmp_path)
    a = reference(store.allocate_id())
    store.save(a)
    b = TaughtTarget(store.allocate_id(), "cup", "caption", caption="the red cup")
    store.save(b)
    c = TaughtTarget(store.allocate_id(), "boxed", "box", image=a.image, box=(1.0, 2.0, 10.0, 12.0))
    store.save(c)
    again = TargetStore(tmp_path)
    loaded = {t.target_id: t for t in again.load_all()}
    assert sorted(loaded) == [1, 2, 3]
    assert np.array_equal(loaded[1].image, a.image) and np.array_equal(loaded[1].mask, a.mask)
    assert loaded[2].caption == "the red cup" and loaded[2].image is None
    assert loaded[3].box == (1.0, 2.0, 10.0, 12.0)
    assert again.remove(3) and not again.remove(3)
    assert again.allocate_id() == 4, "ids are never reused, even after a removal"


def test_store_replace_keeps_one_consistent_revision(tmp_path):
    store = TargetStore(tmp_path)
    store.save(reference(1, "old"))
    new = reference(1, "new")
    new.image = 255 - new.image
    store.save(new)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["store.json", "target-000001-r2.image.png", "target-000001-r2.mask.png", "target-000001.json"]
    loaded = TargetStore(tmp_path).load(1)
    assert loaded.label == "new" and np.array_equal(loaded.image, new.image)


def test_store_ignores_and_cleans_interrupted_writes(tmp_path):
    store = TargetStore(tmp_path)
    store.save(reference(1))
    # A crash after the PNGs of revision 2 but before its JSON, plus a half-written temp file.
    (tmp_path / "target-000001-r2.image.png").write_bytes(b"partial")
    (tmp_path / "target-000002-r1.mask.png").write_bytes(b"orphan")
    (tmp_path / ".target-000001.json.abc.tmp").write_bytes(b"{")
    again = TargetStore(tmp_path)
    assert [t.target_id for t in again.load_all()] == [1]
    assert not again.skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "store.json", "target-000001-r1.image.png", "target-000001-r1.mask.png", "target-000001.json"]


def test_store_reports_unreadable_targets(tmp_path):
    store = TargetStore(tmp_path)
    store.save(reference(1))
    (tmp_path / "target-000001-r1.image.png").write_bytes(b"not a png")
    again = TargetStore(tmp_path)
    assert again.load_all() == [] and "target 1" in again.skipped[0]
    assert json.loads((tmp_path / "store.json").read_text())["next_id"] == 2


def test_store_keeps_views_and_removes_their_files_with_the_target(tmp_path):
    store = TargetStore(tmp_path)
    target = reference(1)
    extra = reference(5)
    target.views = [(extra.image, extra.mask), (255 - extra.image, ~extra.mask)]
    store.save(target)
    loaded = TargetStore(tmp_path).load(1)
    assert len(loaded.views) == 2
    for (image, mask), (want_image, want_mask) in zip(loaded.views, target.views):
        np.testing.assert_array_equal(image, want_image)
        np.testing.assert_array_equal(mask, want_mask)
    target.views = target.views[:1]
    store.save(target)  # a new revision: the old revision's view files go
    assert sorted(p.name for p in tmp_path.iterdir() if ".view" in p.name) == [
        "target-000001-r2.view1.image.png", "target-000001-r2.view1.mask.png"]
    assert store.remove(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.json"]


def test_store_remove_commits_even_when_its_images_cannot_be_deleted(tmp_path, monkeypatch):
    store = TargetStore(tmp_path)
    store.save(reference(1))
    store.save(reference(2))
    real_unlink = Path.unlink

    def failing_unlink(path, missing_ok=False):
        if path.suffix == ".png":
            raise PermissionError(f"cannot delete {path.name}")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", failing_unlink)
    assert store.remove(1), "the removal was acknowledged, so it must stand"
    assert store.ids() == [2]
    monkeypatch.undo()
    again = TargetStore(tmp_path)  # a restart sweeps the images no target names
    assert [t.target_id for t in again.load_all()] == [2]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("target-000001")]


# ---------------------------------------------------------------------------- mailbox
def test_live_mailbox_keeps_only_the_newest_frame_per_camera():
    box = FrameMailbox(replay=False)
    assert not box.put("a", 1)
    assert box.put("a", 2) and box.put("a", 3)
    box.put("b", 10)
    assert box.dropped("a") == 2 and box.pending() == 2
    first, second = box.get(0), box.get(0)
    assert (first.camera, first.message) == ("a", 3), "oldest waiting camera first, newest frame"
    assert (second.camera, second.message) == ("b", 10)
    assert box.get(0.01) is None


def test_live_mailbox_is_bounded_whatever_the_rate():
    box = FrameMailbox(replay=False)
    for i in range(10000):
        box.put(f"cam{i % 3}", i)
    assert box.pending() == 3


def taken(box: FrameMailbox, take: str) -> list:
    """The messages one `take` ("get" or "get_batch") hands over, without waiting."""
    got = getattr(box, take)(0)
    return [e.message for e in (got if take == "get_batch" else [got])]


@pytest.mark.parametrize("take,first,rest", [("get", [1], [[2], [3]]), ("get_batch", [1, 2], [[3]])])
def test_replay_mailbox_keeps_order_and_blocks_when_full(take, first, rest):
    box = FrameMailbox(replay=True, capacity=2)
    box.put("a", 1)
    box.put("b", 2)
    done = threading.Event()
    threading.Thread(target=lambda: (box.put("a", 3), done.set()), daemon=True).start()
    assert not done.wait(0.3), "put must wait while the queue is full"
    assert taken(box, take) == first
    assert done.wait(2)
    assert [taken(box, take) for _ in rest] == rest
    assert box.dropped("a") == 0


def test_live_mailbox_batch_is_the_newest_frame_of_every_camera():
    box = FrameMailbox(replay=False)
    assert box.get_batch(0.01) == []
    box.put("b", 1)
    box.put("a", 2)
    box.put("b", 3)  # replaces b's 1: b now arrived after a
    box.put("c", 4)
    batch = box.get_batch(0)
    assert [(e.camera, e.message) for e in batch] == [("a", 2), ("b", 3), ("c", 4)], "oldest arrival first"
    assert box.pending() == 0 and box.dropped("b") == 1
    box.put("a", 5)
    assert [(e.camera, e.message) for e in box.get_batch(0)] == [("a", 5)]


def test_replay_mailbox_batch_takes_each_cameras_oldest_frame_in_order():
    box = FrameMailbox(replay=True)
    for camera, message in [("a", 1), ("a", 2), ("b", 3), ("a", 4), ("c", 5), ("b", 6)]:
        box.put(camera, message)
    batches = []
    while box.pending():
        batches.append([(e.camera, e.message) for e in box.get_batch(0)])
    assert batches == [[("a", 1), ("b", 3), ("c", 5)], [("a", 2), ("b", 6)], [("a", 4)]]
    for camera in "abc":  # each camera's frames in their order, all of them, none twice
        got = [m for batch in batches for c, m in batch if c == camera]
        assert got == sorted(got)
    assert sum(map(len, batches)) == 6 and box.get_batch(0.01) == []


@pytest.mark.parametrize("take", ["get", "get_batch"])
def test_mailbox_waits_for_a_frame_and_close_wakes_the_worker(take):
    box = FrameMailbox()
    got, errors = [], []

    def worker():
        got.append(getattr(box, take)())  # waits: nothing yet
        try:
            getattr(box, take)()
        except Closed:
            errors.append("closed")

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.1)
    box.put("a", 1)
    time.sleep(0.1)
    box.close()
    t.join(2)
    assert [[e.message for e in (batch if take == "get_batch" else [batch])] for batch in got] == [[1]]
    assert errors == ["closed"] and not box.put("a", 1)


# ----------------------------------------------------------------------------- render
def result(tid, mask, label="x", score=0.9):
    rows, cols = np.nonzero(mask)
    box = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())) if rows.size else None
    return TargetResult(tid, label, mask, score, box, TargetState.TRACKED if box else TargetState.OCCLUDED)


def test_label_image_values_are_target_ids_with_overlap_and_hidden_objects():
    h, w = 20, 30
    a = np.zeros((h, w), bool); a[2:10, 2:10] = True
    b = np.zeros((h, w), bool); b[5:15, 5:15] = True  # overlaps a: b wins there
    c = np.zeros((h, w), bool)  # not visible
    d = np.zeros((h, w), bool); d[16:18, 20:22] = True
    e = d.copy()  # same pixels as d, later in the list: d is hidden under it
    lab = label_image([result(7, a), result(3, b), result(9, c), result(4, d), result(5, e)], h, w)
    assert lab.encoding == "mono16" and lab.labels.dtype == np.uint16
    assert lab.values == [7, 3, 0, 0, 5]
    assert lab.labels[6, 6] == 3 and lab.labels[3, 3] == 7 and lab.labels[17, 21] == 5
    assert set(np.unique(lab.labels)) == {0, 3, 5, 7}


def test_label_image_keeps_a_targets_value_whatever_else_is_in_the_frame():
    h, w = 20, 20
    mine = np.zeros((h, w), bool); mine[2:6, 2:6] = True
    other = np.zeros((h, w), bool); other[10:14, 10:14] = True
    alone = label_image([result(42, mine)], h, w)
    crowded = label_image([result(3, other), result(42, mine), result(300, other)], h, w)
    assert alone.values == [42] and crowded.values == [0, 42, 300]
    assert (alone.labels[mine] == 42).all() and (crowded.labels[mine] == 42).all()


def test_label_image_holds_ids_up_to_65535_and_leaves_larger_ones_out():
    h, w = 20, 20
    results = []
    for k in range(300):
        m = np.zeros((h, w), bool)
        m.flat[k] = True
        results.append(result(1000 + k, m))
    big = np.zeros((h, w), bool); big[19, 19] = True
    results += [result(65535, big.copy()), result(65536, big.copy())]
    lab = label_image(results, h, w)
    assert lab.values == list(range(1000, 1300)) + [65535, 0]
    assert lab.unpainted == [65536]
    assert lab.labels.flat[299] == 1299 and lab.labels[19, 19] == 65535
    assert overlay(np.zeros((h, w, 3), np.uint8), results, lab).shape == (h, w, 3)


def test_overlay_tints_only_masked_pixels():
    h, w = 40, 50
    rgb = np.full((h, w, 3), 100, np.uint8)
    m = np.zeros((h, w), bool); m[20:30, 20:40] = True
    out = overlay(rgb, [result(1, m, "mug")])
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[0, 0] == 100).all(), "background untouched"
    assert not (out[25, 30] == 100).all(), "mask tinted"


# --------------------------------------------------------------------------- registry
class StandInEngine:
    """Just enough of SegmentationEngine's target API to test the registry's bookkeeping."""

    def __init__(self):
        self.streams: dict[str, dict[int, str]] = {}

    def add_stream(self, cam):
        self.streams.setdefault(cam, {})

    def add_target(self, cam, prompt, label="", target_id=None, image=None):
        if getattr(prompt, "box", None) == (0.0, 0.0, 0.0, 0.0):
            raise InvalidPromptError("box is empty")
        if target_id in self.streams[cam]:
            raise EngineError(f"target {target_id} already exists")
        self.streams[cam][target_id] = label
        return target_id

    def remove_target(self, cam, tid):
        del self.streams[cam][tid]

    def targets(self, cam):
        return [(tid, label, TargetState.TRACKED) for tid, label in self.streams[cam].items()]


def test_registry_teaches_engine_and_store_together(tmp_path):
    engine = StandInEngine()
    reg = TargetRegistry(engine, TargetStore(tmp_path), ["/a/image", "/b/image/compressed"])
    assert reg.cameras == ["/a/image", "/b/image"]
    text = reg.teach(reference())
    assert text == "taught target 1 'mug' (reference) on every camera"
    assert engine.streams == {"/a/image": {1: "mug"}, "/b/image": {1: "mug"}}
    text = reg.teach(TaughtTarget(0, "", "caption", caption="  the red cup "))
    assert "target 2 'the red cup' (caption)" in text and CAPTION_WAITING in text
    assert reg.tracked_ids("/a/image") == {1} and reg.tracked_ids("/b/image/compressed") == {1}
    statuses = {s.target.target_id: s.status for s in reg.statuses()}
    assert statuses == {1: "tracked", 2: "waiting"}
    # A failing replacement keeps the old target.
    bad = reference(1, "bad")
    bad.mask = np.zeros_like(bad.mask)
    with pytest.raises(TeachError, match="mask is empty"):
        reg.teach(bad, replace=True)
    assert engine.streams["/a/image"] == {1: "mug"}
    assert reg.remove(2) == "removed target 2 'the red cup' (caption) on every camera"
    with pytest.raises(TeachError, match="no target 2"):
        reg.remove(2)
    # Restart: same ids, same engine state.
    engine2 = StandInEngine()
    reg2 = TargetRegistry(engine2, TargetStore(tmp_path), ["/a/image", "/b/image"])
    assert reg2.restore() == ["restored target 1 'mug' (reference) on every camera"]
    assert engine2.streams == {"/a/image": {1: "mug"}, "/b/image": {1: "mug"}}


@pytest.mark.parametrize("target,reason", [
    (TaughtTarget(0, "", "caption", caption=""), "caption is empty"),
    (TaughtTarget(0, "", "caption", caption="y" * 10240), "caption is 10240 characters long"),
    (TaughtTarget(0, "l" * 300, "caption", caption="c"), "label is 300 characters long"),
    (reference(camera="/nope"), "unknown camera '/nope'"),
    (TaughtTarget(0, "b", "box", image=np.zeros((8, 8, 3), np.uint8), box=(0.0, 0.0, 0.0, 0.0)), "box is empty"),
    (TaughtTarget(0, "r", "reference", image=np.zeros((8, 8, 3), np.uint8), mask=np.ones((4, 4), bool)),
     "mask is 4x4 but its image is 8x8"),
])
def test_registry_refuses_with_a_reason(tmp_path, target, reason):
    engine = StandInEngine()
    reg = TargetRegistry(engine, TargetStore(tmp_path), ["/a"])
    with pytest.raises(TeachError, match=reason):
        reg.teach(target)
    assert reg.ids() == [] and TargetStore(tmp_path).ids() == [] and engine.streams == {"/a": {}}


def test_registry_reset_of_one_camera_keeps_shared_targets(tmp_path):
    reg = TargetRegistry(StandInEngine(), None, ["/a", "/b"])
    reg.teach(reference(label="shared"))
    reg.teach(reference(label="only-a", camera="/a"))
    text = reg.reset("/a")
    assert text.startswith("forgot 1 target(s) of camera /a (ids: 2)") and "kept 1" in text
    assert reg.ids() == [1]
    assert reg.reset("") == "forgot 1 target(s) of every camera (ids: 1)"


def test_registry_keeps_targets_of_cameras_no_longer_configured(tmp_path):
    reg = TargetRegistry(StandInEngine(), TargetStore(tmp_path), ["/a", "/b"])
    reg.teach(reference(label="on-b", camera="/b"))
    reg2 = TargetRegistry(StandInEngine(), TargetStore(tmp_path), ["/a"])
    lines = reg2.restore()
    assert "kept target 1 'on-b'" in lines[0] and "not configured" in lines[0]
    (status,) = reg2.statuses()
    assert status.status == "waiting" and "not configured" in status.note
    assert TargetStore(tmp_path).ids() == [1], "nothing the user taught is dropped"


def test_registry_refuses_when_the_store_cannot_record_an_id(tmp_path):
    engine = StandInEngine()
    store = TargetStore(tmp_path)
    reg = TargetRegistry(engine, store, ["/a"])

    def full_disk(next_id):
        raise OSError(28, "No space left on device")

    store._write_next_id = full_disk
    for target in (reference(), reference(tid=7)):
        with pytest.raises(TeachError, match="cannot record the target's id: .*No space left"):
            reg.teach(target)
    assert reg.ids() == [] and engine.streams == {"/a": {}}


def test_registry_reset_that_fails_halfway_says_what_it_forgot(tmp_path):
    engine = StandInEngine()
    store = TargetStore(tmp_path)
    reg = TargetRegistry(engine, store, ["/a"])
    reg.teach(reference(label="one"))
    reg.teach(reference(label="two"))
    remove = store.remove

    def failing_remove(target_id):
        if target_id == 2:
            raise OSError(30, "Read-only file system")
        return remove(target_id)

    store.remove = failing_remove
    with pytest.raises(TeachError, match=r"could not remove target 2 .*Read-only.*; 1 target\(s\) were "
                                         r"forgotten before that \(ids: 1\)"):
        reg.reset()
    assert reg.ids() == [2] and store.ids() == [2] and engine.streams == {"/a": {2: "two"}}


def test_camera_key():
    assert camera_key("/cam/image_raw/compressed") == "/cam/image_raw"
    assert camera_key(" /cam/image_raw ") == "/cam/image_raw"


def test_camera_stats_report_rates_and_totals():
    stats = CameraStats("/a", window=0.5)
    for _ in range(10):
        stats.on_input()
    stats.on_dropped()
    stats.on_processed(latency=0.5, step=0.2, overhead=0.01, overlay=True)
    rep = stats.report()
    assert rep.received == 10 and rep.dropped == 1 and rep.processed == 1 and rep.overlays == 1
    assert rep.input_rate > 0 and rep.latency_mean == 0.5 and rep.step_mean == 0.2
    # A second report right after the first (a late timer callback, then one on time)
    # still covers the window: it does not see an empty interval.
    again = stats.report()
    assert again.input_rate > 0 and again.processed_rate > 0 and again.step_mean == 0.2
    time.sleep(0.6)  # past the window: rates and means are of recent frames only
    later = stats.report()
    assert later.input_rate == 0.0 and later.processed_rate == 0.0 and later.step_mean is None
    assert later.received == 10 and later.processed == 1, "totals are lifetime counts"


def test_registry_turns_an_engine_failure_into_a_refusal_and_rolls_back(tmp_path):
    """A failure that is not bad input (here: device memory running out on the second
    camera) refuses the teach and leaves engine and store as they were."""
    engine = StandInEngine()
    reg = TargetRegistry(engine, TargetStore(tmp_path), ["/a", "/b"])
    real_add = engine.add_target

    def out_of_memory_on_b(cam, *args, **kwargs):
        if cam == "/b":
            raise RuntimeError("CUDA out of memory")
        return real_add(cam, *args, **kwargs)

    engine.add_target = out_of_memory_on_b
    with pytest.raises(TeachError, match=r"the engine failed \(RuntimeError: CUDA out of memory\)"):
        reg.teach(reference())
    assert engine.streams == {"/a": {}, "/b": {}}
    assert reg.ids() == [] and TargetStore(tmp_path).load_all() == []


def test_registry_add_view_pins_another_example_all_or_none_and_across_restarts(tmp_path, monkeypatch):
    from refseg_ros.engine import EngineConfig, SegmentationEngine

    def engine_with_streams():
        return SegmentationEngine.from_config(EngineConfig(image_size=128, device="cpu"))

    def examples(engine, camera="/a", tid=1):
        return len(engine._streams[camera].targets[tid].memory.conditioning)

    engine = engine_with_streams()
    reg = TargetRegistry(engine, TargetStore(tmp_path), ["/a", "/b"])
    reg.teach(reference(label="mug", h=48, w=64))
    second = reference(2, h=48, w=64)
    assert reg.add_view(1, second.image, second.mask) == "added view 2 to target 1 'mug' (reference) on every camera"
    assert examples(engine, "/a") == examples(engine, "/b") == 2

    with pytest.raises(TeachError, match="mask is 3x3 but its image is 64x48"):
        reg.add_view(1, second.image, np.ones((3, 3), bool))
    with pytest.raises(TeachError, match="no target 9"):
        reg.add_view(9, second.image, second.mask)
    reg.teach(TaughtTarget(0, "", "caption", caption="the cup"))
    with pytest.raises(TeachError, match="is not one"):
        reg.add_view(2, second.image, second.mask)

    def full_disk(target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reg.store, "save", full_disk)
    with pytest.raises(TeachError, match="could not store .*No space left"):
        reg.add_view(1, second.image, second.mask)
    assert examples(engine, "/a") == examples(engine, "/b") == 2, "the refused view is taken back"
    monkeypatch.undo()

    stored = TargetStore(tmp_path).load(1)
    assert len(stored.views) == 1
    np.testing.assert_array_equal(stored.views[0][0], second.image)
    np.testing.assert_array_equal(stored.views[0][1], second.mask)
    engine2 = engine_with_streams()
    TargetRegistry(engine2, TargetStore(tmp_path), ["/a", "/b"]).restore()
    assert examples(engine2, "/a") == examples(engine2, "/b") == 2, "views come back after a restart"


def test_registry_refuses_a_mask_that_vanishes_at_the_model_resolution(tmp_path):
    """The engine's refusal of a prompt too small for the model reaches the caller as the
    reply's reason, and nothing is taught: not the engine, not the store, not the list."""
    from refseg_ros.engine import EngineConfig, SegmentationEngine

    engine = SegmentationEngine.from_config(EngineConfig(image_size=128, device="cpu"))
    reg = TargetRegistry(engine, TargetStore(tmp_path), ["/a", "/b"])
    hd = np.zeros((1080, 1920, 3), np.uint8)
    speck = np.zeros((1080, 1920), bool)
    speck[500:502, 900:902] = True
    with pytest.raises(TeachError, match=r"mask covers 4 pixels \(a 2x2 box\) of the 1920x1080 image .*"
                                         r"empty at the model's 128x128 input.*at least 120x68 pixels"):
        reg.teach(TaughtTarget(0, "speck", "reference", image=hd, mask=speck))
    assert reg.ids() == [] and reg.statuses() == [] and TargetStore(tmp_path).ids() == []
    assert engine.targets("/a") == engine.targets("/b") == []

    taught = reference(label="mug", h=48, w=64)
    reg.teach(taught)
    (tid,) = reg.ids()
    dot = np.zeros((48, 64), bool)
    dot[20, 30] = True  # 2 x 2.7 model pixels: less than one cell of the 32x32 mask prompt
    with pytest.raises(TeachError, match=r"mask covers 1 pixel .*vanishes from SAM2's 32x32 mask prompt"):
        reg.add_view(tid, taught.image, dot)
    assert [len(engine._streams[c].targets[tid].memory.conditioning) for c in ("/a", "/b")] == [1, 1]
    assert TargetStore(tmp_path).load(tid).views == []
