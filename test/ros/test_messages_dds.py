"""The generated messages and services cross real DDS between separate processes intact.

A publisher process and a subscriber process (real rclpy, Fast DDS, this session's
private domain on localhost) exchange a ReferenceTarget carrying a 640x480 rgb8 image
and a mono8 mask, and a SegmentedObjectArray; a server process answers AddTarget and
ListTargets calls from a client process. Each side writes what it sent or received as
serialized bytes; the test compares them field by field.
"""

from __future__ import annotations

import array
import time
from pathlib import Path

import numpy as np
import pytest

from rclpy.serialization import deserialize_message

from refseg_ros.msg import ReferenceTarget, SegmentedObject, SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets
from support import dds_peer as peer

PEER = str(Path(peer.__file__).resolve())
WAIT_S = peer.TIMEOUT_S + 15


def plain(value):
    """A ROS message as plain Python data (dicts, lists, bytes), for comparison."""
    if hasattr(value, "get_fields_and_field_types"):
        return {name: plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (array.array, np.ndarray)):
        return value.tolist()
    return value


def first_difference(a, b, path="msg"):
    """Path and values of the first field where a and b differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return path, sorted(a), sorted(b)
        for key in a:
            diff = first_difference(a[key], b[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff = first_difference(x, y, f"{path}[{i}]")
            if diff:
                return diff
        return None
    if a != b:
        if isinstance(a, bytes) and isinstance(b, bytes):
            return path, f"{len(a)} bytes", f"{len(b)} bytes (differ)"
        return path, a, b
    return None


def assert_same(sent, received):
    diff = first_difference(plain(sent), plain(received))
    assert diff is None, f"field {diff[0]}: sent {diff[1]!r}, received {diff[2]!r}"


def load(path: Path, msg_type):
    assert path.exists(), f"{path.name} was not written"
    return deserialize_message(path.read_bytes(), msg_type)


def wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            rc = None
        assert rc == 0, f"{proc.args[1:2]} exited with {rc}:\n" + "\n".join(p.output() for p in procs)


def test_topics_round_trip_between_processes(spawn_python, tmp_path):
    seed = 20240611
    out = tmp_path / "topics"
    out.mkdir()
    subscriber = spawn_python(PEER, "subscriber", str(out))
    publisher = spawn_python(PEER, "publisher", str(out), str(seed))
    wait_all([subscriber, publisher], WAIT_S)

    sent_ref = load(out / "sent_reference.cdr", ReferenceTarget)
    got_ref = load(out / "received_reference.cdr", ReferenceTarget)
    sent_objs = load(out / "sent_objects.cdr", SegmentedObjectArray)
    got_objs = load(out / "received_objects.cdr", SegmentedObjectArray)

    # What was sent is what the test meant to send (same generator, same seed) ...
    assert_same(peer.reference_target(seed), sent_ref)
    assert_same(peer.segmented_objects(seed), sent_objs)
    # ... and what arrived is what was sent, field by field.
    assert_same(sent_ref, got_ref)
    assert_same(sent_objs, got_objs)

    # The payloads themselves, explicitly.
    expected_rgb = np.random.default_rng(seed).integers(0, 256, size=640 * 480 * 3, dtype=np.uint8).tobytes()
    assert (got_ref.image.width, got_ref.image.height, got_ref.image.step) == (640, 480, 1920)
    assert got_ref.image.encoding == "rgb8"
    assert bytes(got_ref.image.data) == expected_rgb
    mask = np.frombuffer(bytes(got_ref.mask.data), np.uint8)
    assert got_ref.mask.encoding == "mono8" and mask.size == 640 * 480
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert got_ref.label == "red mug ☕" and got_ref.target_id == 7

    assert [o.state for o in got_objs.objects] == [
        SegmentedObject.STATE_TRACKED,
        SegmentedObject.STATE_OCCLUDED,
        SegmentedObject.STATE_LOST,
    ]
    assert [o.mask_value for o in got_objs.objects] == [1, 2, 3]
    assert got_objs.objects[1].bbox.do_rectify is True
    assert got_objs.objects[2].score == pytest.approx(0.75)
    assert len(got_objs.objects[0].mask.data) == 64 * 48 and len(got_objs.objects[1].mask.data) == 0
    assert got_objs.header.stamp.nanosec == 999_999_999


def test_services_round_trip_between_processes(spawn_python, tmp_path):
    out = tmp_path / "services"
    out.mkdir()
    server = spawn_python(PEER, "server", str(out))
    client = spawn_python(PEER, "client", str(out))
    wait_all([client, server], WAIT_S)

    sent = load(out / "client_request.cdr", AddTarget.Request)
    received = load(out / "server_request.cdr", AddTarget.Request)
    assert_same(peer.add_target_request(), sent)
    assert_same(sent, received)

    response = load(out / "add_response.cdr", AddTarget.Response)
    assert response.success is True
    assert response.message == (
        "added 'cup' for /camera/image_raw: image 32x24 rgb8, 4 box values, 2 points"
    )
    assert response.target_id == 44

    listing = load(out / "list_response.cdr", ListTargets.Response)
    assert listing.success is True
    assert [(t.target_id, t.label, t.kind, t.camera, t.caption, t.status) for t in listing.targets] == [
        (1, "cup", "mask", "/camera/image_raw", "", "tracked"),
        (2, "dog", "caption", "", "a brown dog", "waiting"),
    ]
