"""Bad input, each sent while a target is tracked: a clear reason comes back (status topic
or service reply), the node keeps running and publishing, and the target stays tracked.

Row padding (step > width * channels) is not bad input: a padded frame must give exactly
the mask of the same frame without padding.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sensor_msgs.msg import Image
from std_msgs.msg import String

from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets, RemoveTarget
from support.node_harness import Listener, image_msg, scene, scene_reference, start_camera, start_node

W, H = 320, 240
CAM0, PAD, NOPAD = "/cam0/image_raw", "/pad/image_raw", "/nopad/image_raw"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A node tracking one target ('square', every camera), cam0 fed by a camera process."""
    tmp = tmp_path_factory.mktemp("bad_input")
    listener = Listener("bad_input_listener")
    listener.listen_status()
    for cam in (CAM0, PAD, NOPAD):
        listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
        listener.listen(f"{cam}/refseg/mask", Image)
    procs = []
    try:
        node = start_node(tmp, {"cameras": [CAM0, PAD, NOPAD], "store_dir": str(tmp / "store"),
                                "status_repeat_period": 0.0})
        procs.append(node)
        procs.append(start_camera(tmp, CAM0, "cam0", rate=5))
        listener.wait_status("active", timeout=90, node=node)
        listener.teach(scene_reference(W, H), timeout=60, node=node)
        tid = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request()).targets[0].target_id
        wait_tracked(listener, node, tid)
        yield listener, node, tid
    finally:
        for proc in reversed(procs):
            proc.stop()
        listener.close()


def wait_tracked(listener: Listener, node, tid: int, after: int = 0, frames: int = 2) -> None:
    """cam0 keeps publishing arrays that hold the target (`frames` new ones)."""
    topic = f"{CAM0}/refseg/objects"
    start = max(after, 0)
    listener.wait_for(
        lambda: sum(tid in {o.target_id for o in m.objects} for _, m in listener.received(topic)[start:]) >= frames,
        timeout=60, what=f"{frames} new arrays on {CAM0} holding target {tid}", node=node)


def still_fine(listener: Listener, node, tid: int) -> None:
    assert node.alive(), node.output()[-3000:]
    wait_tracked(listener, node, tid, after=listener.count(f"{CAM0}/refseg/objects"))


def send_frame(listener: Listener, topic: str, msg: Image, node) -> None:
    listener.publish_when_heard(topic, Image, msg, node=node)


def test_row_padding_gives_the_unpadded_mask(tracked):
    listener, node, tid = tracked
    for t in (3, 7):
        frame, _ = scene(W, H, t)
        plain = image_msg(frame, "rgb8", "pad_test")
        padded = image_msg(frame, "rgb8", "pad_test")
        pad = 13
        rows = np.full((H, W * 3 + pad), 77, np.uint8)
        rows[:, : W * 3] = frame.reshape(H, W * 3)
        padded.step = W * 3 + pad
        padded.data = rows.tobytes()
        padded.header.stamp.sec = plain.header.stamp.sec = 1000 + t
        outputs = [f"{cam}/refseg/{kind}" for cam in (PAD, NOPAD) for kind in ("mask", "objects")]
        before = {topic: listener.count(topic) for topic in outputs}
        send_frame(listener, PAD, padded, node)
        send_frame(listener, NOPAD, plain, node)
        # The mask and the object array travel on separate topics: wait for all four.
        listener.wait_for(lambda before=before: all(listener.count(topic) > n for topic, n in before.items()),
                          60, "masks and object arrays of both cameras", node)
        got_pad = listener.received(f"{PAD}/refseg/mask")[-1][1]
        got_plain = listener.received(f"{NOPAD}/refseg/mask")[-1][1]
        assert (got_pad.width, got_pad.height, got_pad.step, got_pad.encoding) == (W, H, 2 * W, "mono16")
        assert bytes(got_pad.data) == bytes(got_plain.data), "row padding changed the mask"
        obj_pad = listener.received(f"{PAD}/refseg/objects")[-1][1].objects
        obj_plain = listener.received(f"{NOPAD}/refseg/objects")[-1][1].objects
        assert [(o.target_id, o.score, o.bbox.x_offset, o.bbox.width) for o in obj_pad] == \
               [(o.target_id, o.score, o.bbox.x_offset, o.bbox.width) for o in obj_plain]
    still_fine(listener, node, tid)


BAD_FRAMES = [
    ("unknown encoding", dict(encoding="weird42"), "unsupported image encoding 'weird42'"),
    ("data shorter than height*step", dict(data=bytes(100)), "fewer than height*step"),
    ("zero size", dict(height=0, width=0, step=0, data=b""), "zero size"),
    ("step shorter than a row", dict(step=W), "shorter than one row"),
]


@pytest.mark.parametrize("name,fields,reason", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_are_rejected_with_a_reason(tracked, name, fields, reason):
    listener, node, tid = tracked
    frame, _ = scene(W, H, 0)
    msg = image_msg(frame, "rgb8", "bad")
    for key, value in fields.items():
        setattr(msg, key, value)
    since = listener.count("/refseg/status")
    send_frame(listener, NOPAD, msg, node)
    text = listener.wait_status(reason, since, node=node)
    assert text.startswith(f"rejected frame on camera {NOPAD}")
    still_fine(listener, node, tid)


def test_bad_references_are_rejected_with_a_reason(tracked):
    listener, node, tid = tracked
    frame, mask = scene(W, H, 0)
    cases = [
        (image_msg(np.full((10, 12), 255, np.uint8), "mono8"), "mask is 12x10 but its image is 320x240"),
        (image_msg(np.zeros((H, W), np.uint8), "mono8"), "mask is empty"),
        (image_msg(np.zeros((H, W, 3), np.uint8), "rgb8"), "mask encoding must be one of"),
    ]
    for bad_mask, reason in cases:
        since = listener.count("/refseg/status")
        listener.publisher("/refseg/reference", ReferenceTarget).publish(
            ReferenceTarget(label="bad", image=image_msg(frame, "rgb8"), mask=bad_mask))
        text = listener.wait_status(reason, since, node=node)
        assert text.startswith("rejected reference 'bad'")
    still_fine(listener, node, tid)
    listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request())
    assert [t.target_id for t in listed.targets] == [tid]


def test_bad_captions_are_rejected_with_a_reason(tracked):
    listener, node, tid = tracked
    for caption, reason in (("", "caption is empty"), ("   ", "caption is empty"),
                            ("x" * 10240, "caption is 10240 characters long (at most 1000)")):
        since = listener.count("/refseg/status")
        listener.publish_when_heard("/refseg/caption", String, String(data=caption), node=node)
        text = listener.wait_status(reason, since, node=node)
        assert text.startswith("rejected caption") and len(text) < 300
    still_fine(listener, node, tid)


def test_bad_service_requests_get_a_reason(tracked):
    listener, node, tid = tracked
    frame, _ = scene(W, H, 0)
    reply = listener.call(RemoveTarget, "/refseg/remove_target", RemoveTarget.Request(target_id=987654))
    assert not reply.success and "no target 987654" in reply.message
    cases = [
        (AddTarget.Request(), "give exactly one of"),
        (AddTarget.Request(camera="/nope", label="x", box=[1.0, 2.0, 30.0, 40.0]), "unknown camera '/nope'"),
        (AddTarget.Request(label="x", image=image_msg(frame, "rgb8"), box=[500.0, 500.0, 600.0, 600.0]),
         "outside"),
        (AddTarget.Request(label="x", image=image_msg(frame, "rgb8"), box=[1.0, 2.0]), "box must be 4 numbers"),
        (AddTarget.Request(label="x", caption="a mug", box=[1.0, 2.0, 3.0, 4.0]), "not both"),
        (AddTarget.Request(camera=CAM0, label="x", box=[10.0, 10.0, 5.0, 5.0]), "empty"),
    ]
    for request, reason in cases:
        reply = listener.call(AddTarget, "/refseg/add_target", request)
        assert not reply.success and reason in reply.message, reply.message
    still_fine(listener, node, tid)


def test_a_thousand_add_remove_calls(tracked):
    listener, node, tid = tracked
    add = listener.client(AddTarget, "/refseg/add_target")
    remove = listener.client(RemoveTarget, "/refseg/remove_target")
    assert add.wait_for_service(timeout_sec=30) and remove.wait_for_service(timeout_sec=30)
    start = time.monotonic()
    for i in range(500):
        reply = listener.call_with(add, AddTarget.Request(label=f"c{i}", caption=f"the object number {i}"))
        assert reply.success, reply.message
        assert "is waiting: no text model configured" in reply.message
        gone = listener.call_with(remove, RemoveTarget.Request(target_id=reply.target_id))
        assert gone.success, gone.message
    elapsed = time.monotonic() - start
    listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request())
    assert [t.target_id for t in listed.targets] == [tid], "add/remove left targets behind"
    still_fine(listener, node, tid)
    assert elapsed < 120, f"1000 calls took {elapsed:.0f} s"
