"""Reference targets with acquisition through the node over DDS (a tiny random-weight
DINOv2 from a folder, the small SAM2, a camera process): the target is listed with its
prior, and no mask is published for it until the prior accepts a candidate. The
acceptance itself (seed, "re-acquired") is covered on the engine in
test_engine_proposers.py; here the test holds the gate shut (a threshold no raw score
reaches) and compares with the same node without acquisition, which does publish masks.
"""

from __future__ import annotations

import re

import pytest

from _node_harness import Listener, scene_reference, start_camera, start_node
from _tiny_models import save_dinov2
from refseg_ros.msg import SegmentedObjectArray
from refseg_ros.srv import ListTargets

CAM0 = "/cam0/image_raw"
OBJECTS = f"{CAM0}/refseg/objects"
W, H = 320, 240


@pytest.fixture
def listener():
    listener = Listener("acquisition_listener")
    listener.listen_status()
    listener.listen(OBJECTS, SegmentedObjectArray)
    yield listener
    listener.close()


def _run(tmp_path, listener, params: dict, name: str) -> tuple[int, str, list]:
    """Start a node and a camera, teach the scene's square, watch 8 frames after the
    teaching; returns (target id, its listed path, the object lists)."""
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": "", **params}, name=name)
    camera = start_camera(tmp_path, CAM0, "cam0_optical", rate=5, name=f"{name}_camera")
    try:
        listener.wait_status("active", timeout=120, node=node)
        ack = listener.teach(scene_reference(W, H, "square"), listener.count("/refseg/status"), node=node)
        tid = int(re.match(r"taught target (\d+) ", ack).group(1))
        start = listener.count(OBJECTS)
        listener.wait_for(lambda: listener.count(OBJECTS) >= start + 8, 120, "8 object lists", node)
        reply = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request(), timeout=60)
        path = {t.target_id: t.path for t in reply.targets}[tid]
        arrays = [m for _, m in listener.received(OBJECTS)[start:]]
        return tid, path, arrays
    finally:
        camera.stop()
        node.stop()
        listener.clear()


def test_reference_target_is_withheld_until_its_prior_accepts(tmp_path, listener):
    dino = save_dinov2(tmp_path / "dino")
    tid, path, arrays = _run(tmp_path, listener, {"dino_model": str(dino), "acquisition_threshold": 2.0}, "gated")
    assert path == "acquisition"
    masked = [o for a in arrays for o in a.objects if o.target_id == tid and o.area > 0]
    assert masked == []  # never a mask while the prior has not found it

    tid, path, arrays = _run(tmp_path, listener, {}, "plain")
    assert path == ""
    masked = [o for a in arrays for o in a.objects if o.target_id == tid and o.area > 0]
    assert masked  # without acquisition, the tracker alone draws masks from the pinned reference
