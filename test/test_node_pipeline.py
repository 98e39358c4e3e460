"""Camera processes -> node process -> listener, over real DDS.

Two cameras (one raw Image, one CompressedImage) feed one node; for both, label images and
object arrays arrive with the source header (stamp and frame id), the label image agrees
with the object array, the overlay is drawn only for the camera someone watches, and
/diagnostics reports each camera. In replay mode every frame comes out, in order, and
the node's clock is the simulated one (/clock) when use_sim_time is set.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from _node_harness import Listener, image_msg, scene, scene_reference, stamp_key, start_camera, start_node
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from refseg_ros import imaging
from refseg_ros.msg import ReferenceTarget, SegmentedObject, SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets

W, H = 320, 240
CAM0, CAM1 = "/cam0/image_raw", "/cam1/image_raw"


def read_stamps(path: Path) -> set[tuple[int, int]]:
    if not path.exists():
        return set()
    return {tuple(int(v) for v in line.split()) for line in path.read_text().splitlines() if line.strip()}


def check_label_image(mask: Image, objects: SegmentedObjectArray) -> None:
    """Pixel value k lies inside object k's box; the values present are the visible objects."""
    labels = imaging.image_to_array(mask.encoding, mask.height, mask.width, mask.step,
                                    mask.is_bigendian, bytes(mask.data))
    assert mask.encoding == ("mono8" if len(objects.objects) <= 255 else "mono16")
    present = set(np.unique(labels).tolist()) - {0}
    visible = {o.mask_value for o in objects.objects if o.mask_value}
    assert present == visible, f"label values {present} but objects say {visible}"
    for k, obj in enumerate(objects.objects, start=1):
        assert obj.mask_value in (0, k), f"object {k} has mask_value {obj.mask_value}"
        if not obj.mask_value:
            continue
        ys, xs = np.nonzero(labels == k)
        box = obj.bbox
        assert box.width > 0 and box.height > 0
        assert xs.min() >= box.x_offset and xs.max() < box.x_offset + box.width
        assert ys.min() >= box.y_offset and ys.max() < box.y_offset + box.height


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    listener = Listener("pipeline_listener")
    for cam in (CAM0, CAM1):
        listener.listen(f"{cam}/refseg/mask", Image)
        listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    listener.listen(f"{CAM0}/refseg/overlay", Image)
    listener.listen_status()
    listener.listen("/diagnostics", DiagnosticArray)
    procs = []
    try:
        node = start_node(tmp, {"cameras": [CAM0, CAM1 + "/compressed"], "store_dir": str(tmp / "store")})
        procs.append(node)
        procs.append(start_camera(tmp, CAM0, "cam0_optical", rate=5, stamps_file=tmp / "cam0.stamps",
                                  name="cam0"))
        procs.append(start_camera(tmp, CAM1 + "/compressed", "cam1_optical", rate=5, compressed=True,
                                  stamps_file=tmp / "cam1.stamps", name="cam1"))
        listener.wait_status("active", timeout=90, node=node)
        yield listener, node, tmp
    finally:
        for proc in reversed(procs):
            proc.stop()
        listener.close()


def test_both_cameras_get_masks_and_objects_with_their_headers(live):
    listener, node, tmp = live
    since = listener.count("/refseg/status")
    taught = listener.teach(scene_reference(W, H, frame_id="ref"), since, node=node)
    assert "on every camera" in taught
    frame, mask = scene(W, H, 0)
    reply = listener.call(AddTarget, "/refseg/add_target",
                          AddTarget.Request(camera=CAM1, label="boxed", image=image_msg(frame, "rgb8"),
                                            box=[float(W // 4), float(H // 3), float(W // 4 + 60), float(H // 3 + 60)]))
    assert reply.success, reply.message
    ids = {o.target_id for o in []}
    listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request())
    ids = {t.label: t.target_id for t in listed.targets}
    assert set(ids) == {"square", "boxed"} and ids["boxed"] == reply.target_id

    expected = {CAM0: {ids["square"]}, CAM1: {ids["square"], ids["boxed"]}}
    for cam, want in expected.items():
        listener.wait_for(
            lambda cam=cam, want=want: sum(
                {o.target_id for o in m.objects} == want for _, m in listener.received(f"{cam}/refseg/objects")) >= 3,
            timeout=120, what=f"3 object arrays on {cam} with targets {want}", node=node)

    for cam, frame_id in ((CAM0, "cam0_optical"), (CAM1, "cam1_optical")):
        sent = read_stamps(tmp / f"{cam.split('/')[1]}.stamps")
        masks = {stamp_key(m.header.stamp): m for _, m in listener.received(f"{cam}/refseg/mask")}
        arrays = [m for _, m in listener.received(f"{cam}/refseg/objects")]
        assert arrays and masks
        paired = 0
        for objects in arrays:
            key = stamp_key(objects.header.stamp)
            assert objects.header.frame_id == frame_id
            assert key in sent, f"{cam}: stamp {key} was never sent by the camera"
            if key in masks:
                assert masks[key].header.frame_id == frame_id
                assert (masks[key].width, masks[key].height) == (W, H)
                check_label_image(masks[key], objects)
                paired += 1
        assert paired >= 3
        tracked = [m for m in arrays if {o.target_id for o in m.objects} == expected[cam]]
        for objects in tracked:
            for obj in objects.objects:
                assert obj.label in ("square", "boxed")
                assert 0.0 <= obj.score <= 1.0
                assert obj.state in (SegmentedObject.STATE_ACQUIRING, SegmentedObject.STATE_TRACKED,
                                     SegmentedObject.STATE_OCCLUDED, SegmentedObject.STATE_LOST)


def test_overlay_only_for_watched_camera_and_diagnostics(live):
    listener, node, tmp = live
    listener.wait_for(lambda: listener.count(f"{CAM0}/refseg/overlay") >= 2, 60, "overlays on cam0", node)
    _, overlay = listener.received(f"{CAM0}/refseg/overlay")[-1]
    assert overlay.encoding == "rgb8" and (overlay.width, overlay.height) == (W, H)
    assert overlay.header.frame_id == "cam0_optical"

    def camera_values():
        latest = {}
        for _, array in listener.received("/diagnostics"):
            for status in array.status:
                if status.name.startswith("refseg: camera "):
                    latest[status.hardware_id] = {kv.key: kv.value for kv in status.values}
        return latest if len(latest) == 2 and all(int(v["frames_processed"]) > 0 for v in latest.values()) else None

    values = listener.wait_for(camera_values, 30, "diagnostics for both cameras", node)
    for cam in (CAM0, CAM1):
        v = values[cam]
        for key in ("input_rate_hz", "processed_rate_hz", "frames_dropped", "latency_ms", "step_time_ms"):
            assert key in v, f"{key} missing from {cam}'s diagnostics"
        assert float(v["input_rate_hz"]) > 0
    assert int(values[CAM0]["overlays_published"]) > 0
    assert int(values[CAM1]["overlays_published"]) == 0, "overlay drawn although nobody subscribes"
    assert node.alive()


def test_replay_mode_processes_every_frame_in_order_on_sim_time(tmp_path):
    """mode: replay with use_sim_time: every frame in order, latency measured on /clock."""
    from rosgraph_msgs.msg import Clock

    listener = Listener("replay_listener")
    cam = "/replay/image_raw"
    status = "/replay_node/status"
    listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    listener.listen("/diagnostics", DiagnosticArray)
    listener.listen_status(status)
    # A simulated clock 100 s ahead of the camera's stamps: the node's latency must say ~100 s.
    clock = listener.publisher("/clock", Clock)
    ticking = threading.Event()

    def tick():
        while not ticking.wait(0.05):
            now = time.time() + 100.0
            clock.publish(Clock(clock=Time(sec=int(now), nanosec=int((now % 1) * 1e9))))

    threading.Thread(target=tick, daemon=True).start()
    node = start_node(tmp_path, {"cameras": [cam], "mode": "replay", "store_dir": "", "use_sim_time": True,
                                 "status_topic": status, "reference_topic": "/replay_node/reference"})
    camera = None
    try:
        listener.wait_status("active", timeout=90, node=node, topic=status)
        listener.publish_when_heard("/replay_node/reference", ReferenceTarget,
                                    scene_reference(W, H, frame_id="ref"), node=node)
        listener.wait_status("taught target", timeout=60, node=node, topic=status)
        count = 12
        camera = start_camera(tmp_path, cam, "replay_optical", rate=15, count=count,
                              stamps_file=tmp_path / "replay.stamps")
        listener.wait_for(lambda: listener.count(f"{cam}/refseg/objects") >= count, 180,
                          f"{count} object arrays", node)
        time.sleep(1.0)
        arrays = [m for _, m in listener.received(f"{cam}/refseg/objects")]
        sent = sorted(read_stamps(tmp_path / "replay.stamps"))
        assert [stamp_key(m.header.stamp) for m in arrays] == sent, "replay must process every frame in order"
        assert all(len(m.objects) == 1 for m in arrays)

        def latency():
            for _, array in reversed(listener.received("/diagnostics")):
                for st in array.status:
                    if st.hardware_id == cam:
                        value = {kv.key: kv.value for kv in st.values}["latency_max_ms"]
                        if value != "n/a":
                            return float(value) / 1e3
            return None

        seconds = listener.wait_for(latency, 30, "a latency in /diagnostics", node)
        assert 95.0 < seconds < 130.0, f"latency {seconds:.1f} s: the node did not use /clock"
    finally:
        ticking.set()
        if camera is not None:
            camera.stop()
        node.stop()
        listener.close()
