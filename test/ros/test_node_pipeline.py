"""Camera processes -> node process -> listener, over real DDS.

Two cameras (one raw Image, one CompressedImage) feed one node; for both, label images and
object arrays arrive with the source header (stamp and frame id), the label image agrees
with the object array, the overlay is drawn only for the camera someone watches, and
/diagnostics reports each camera. Replay mode is tested in test_node_replay.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from refseg_ros import imaging
from refseg_ros.msg import SegmentedObject, SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets
from support.node_harness import (Listener, image_msg, read_stamps, scene, scene_reference, stamp_key, start_camera,
                                  start_node)

W, H = 320, 240
CAM0, CAM1 = "/cam0/image_raw", "/cam1/image_raw"


def check_label_image(mask: Image, objects: SegmentedObjectArray) -> None:
    """Pixel value = target id, inside that object's box; the values present are the visible objects."""
    labels = imaging.image_to_array(mask.encoding, mask.height, mask.width, mask.step,
                                    mask.is_bigendian, bytes(mask.data))
    assert mask.encoding == "mono16"
    present = set(np.unique(labels).tolist()) - {0}
    visible = {o.mask_value for o in objects.objects if o.mask_value}
    assert present == visible, f"label values {present} but objects say {visible}"
    for obj in objects.objects:
        k = obj.target_id
        assert obj.mask_value in (0, k), f"target {k} has mask_value {obj.mask_value}"
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
