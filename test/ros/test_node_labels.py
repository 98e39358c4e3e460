"""Label images that name their targets, over real DDS: the camera (test/support/camera.py) and
the node in their own processes, a listener here.

Targets are taught and removed while the camera runs; in every label image a pixel's value
is its target's id (mono16), equal to that object's mask_value and inside its own mask,
and a target keeps its value while others come and go. The node here runs without
vision_msgs and tf2_msgs (unless the real ones are installed) and says so once.
"""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image

from refseg_ros import imaging
from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
from refseg_ros.srv import RemoveTarget
from support.node_harness import Listener, image_msg, scene, start_camera, start_node, stamp_key
from support.standins import installed

W, H = 320, 240
CAM = "/labels/image_raw"


def reference(label: str, rows: slice, cols: slice) -> ReferenceTarget:
    frame, _ = scene(W, H, 0)
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = 255
    return ReferenceTarget(label=label, image=image_msg(frame, "rgb8"), mask=image_msg(mask, "mono8"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    listener = Listener("labels_listener")
    listener.listen_status()
    listener.listen(f"{CAM}/refseg/mask", Image)
    listener.listen(f"{CAM}/refseg/objects", SegmentedObjectArray)
    procs = []
    try:
        node = start_node(tmp, {"cameras": [CAM], "store_dir": "", "object_masks": True})
        procs.append(node)
        listener.wait_status("active", timeout=90, node=node)
        procs.append(start_camera(tmp, CAM, "labels_optical", rate=4, name="camera"))
        yield listener, node
    finally:
        for proc in reversed(procs):
            proc.stop()
        listener.close()


def teach(listener: Listener, node, ref: ReferenceTarget) -> int:
    text = listener.teach(ref, listener.count("/refseg/status"), node=node)
    return int(text.split("taught target ", 1)[1].split()[0])


def pairs(listener: Listener) -> list[tuple[Image, SegmentedObjectArray]]:
    masks = {stamp_key(m.header.stamp): m for _, m in listener.received(f"{CAM}/refseg/mask")}
    return [(masks[stamp_key(o.header.stamp)], o) for _, o in listener.received(f"{CAM}/refseg/objects")
            if stamp_key(o.header.stamp) in masks]


def wait_frames(listener: Listener, node, ids: set[int], count: int = 4) -> list:
    """The (label image, objects) pairs, once `count` of them carry exactly targets `ids`."""
    def ready():
        got = [p for p in pairs(listener) if {o.target_id for o in p[1].objects} == ids]
        return got if len(got) >= count else None
    return listener.wait_for(ready, 240, f"{count} frames with targets {sorted(ids)}", node)


def values_of(mask: Image, objects: SegmentedObjectArray) -> dict[int, int]:
    """Check one label image against its objects; target id -> its mask_value."""
    assert mask.encoding == "mono16"
    labels = imaging.image_to_array(mask.encoding, mask.height, mask.width, mask.step, mask.is_bigendian,
                                    bytes(mask.data))
    present = set(np.unique(labels).tolist()) - {0}
    assert present == {o.mask_value for o in objects.objects if o.mask_value}
    for obj in objects.objects:
        assert obj.mask_value in (0, obj.target_id), f"target {obj.target_id} has mask_value {obj.mask_value}"
        own = imaging.image_to_array(obj.mask.encoding, obj.mask.height, obj.mask.width, obj.mask.step,
                                     obj.mask.is_bigendian, bytes(obj.mask.data)) != 0
        assert own[labels == obj.target_id].all(), f"pixels of value {obj.target_id} outside target's own mask"
    return {o.target_id: o.mask_value for o in objects.objects}


def test_a_target_keeps_its_pixel_value_while_others_come_and_go(labelled):
    listener, node = labelled
    for package in ("vision_msgs", "tf2_msgs"):
        if not installed(package):
            listener.wait_status(f"{package} is not importable", node=node)
    # A first target, removed at once: ids then differ from positions in the object list.
    gone = teach(listener, node, reference("gone", slice(0, 20), slice(0, 20)))
    assert listener.call(RemoveTarget, "/refseg/remove_target", RemoveTarget.Request(target_id=gone)).success
    a = teach(listener, node, reference("square", slice(H // 3, H // 3 + H // 4), slice(W // 4, W // 4 + H // 4)))
    b = teach(listener, node, reference("left", slice(0, H), slice(0, W // 6)))
    c = teach(listener, node, reference("bottom", slice(H - H // 5, H), slice(0, W)))
    first = wait_frames(listener, node, {a, b, c})
    assert listener.call(RemoveTarget, "/refseg/remove_target", RemoveTarget.Request(target_id=b)).success
    d = teach(listener, node, reference("top", slice(0, H // 6), slice(W // 3, W)))
    second = wait_frames(listener, node, {a, c, d})

    seen: dict[int, set[int]] = {}
    for phase, frames in (("before", first), ("after", second)):
        for mask, objects in frames:
            for tid, value in values_of(mask, objects).items():
                if value:
                    seen.setdefault(tid, set()).add(phase)
    # every array checked above; at least one target that stayed is seen in both phases
    # (its value is its id there, whatever its position in the array)
    assert any(seen.get(t) == {"before", "after"} for t in (a, c)), f"targets seen: {seen}"
    assert not [m.data for _, m in listener.received("/refseg/status") if "65535" in m.data]


def test_an_id_beyond_the_label_image_is_left_out_and_said_once(labelled):
    listener, node = labelled
    big = reference("big", slice(H // 3, H // 3 + H // 4), slice(W // 4, W // 4 + H // 4))
    big.target_id = 70000  # a reference may name its id
    teach(listener, node, big)

    def shown():
        got = [(mask, o) for mask, o in pairs(listener) for obj in o.objects if obj.target_id == 70000 and obj.area]
        return got or None
    frames = listener.wait_for(shown, 240, "target 70000 visible", node)
    for mask, objects in frames:
        values = values_of(mask, objects)
        assert values[70000] == 0
    listener.wait_status(f"camera {CAM}: target id(s) 70000 exceed 65535: not in the label image", node=node)
    assert node.alive()
