"""The node in a namespace, from the shipped parameters file, over DDS.

`refseg-node --ros-args -r __ns:=/robot1 --params-file config/segmenter.yaml` (plus only
the small model, the CPU and a temporary store as -p overrides) must read the file's
values (asked through the node's own /robot1/refseg/get_parameters service), and every
topic and service it offers must lie under /robot1: its status, its teaching topics and
services, and, for the file's relative camera `camera/image_raw`, the frames it reads and
the results it publishes. A file keyed `refseg:` (not `/**/refseg:`) fails this test:
the node is /robot1/refseg and takes nothing from such a file.
"""

from __future__ import annotations

import pytest

from refseg_ros.ros.params_file import read_parameters
from support import REPO_ROOT
from support.node_harness import (SMALL_MODEL, Listener, get_parameters, image_msg, scene, scene_reference,
                                  start_node)

NAMESPACE = "/robot1"
NODE = f"{NAMESPACE}/refseg"
PARAMS_FILE = REPO_ROOT / "config" / "segmenter.yaml"
W, H = 320, 240


@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("namespace")
    overrides = {"store_dir": str(tmp / "store")}
    # An empty weights cache: the file's `checkpoint: auto` finds nothing there and the
    # node runs on random weights, offline, whatever this machine's cache holds.
    node = start_node(tmp, overrides, params_file=PARAMS_FILE, ros_args=("-r", f"__ns:={NAMESPACE}"),
                      env={"REFSEG_WEIGHTS": str(tmp / "weights")})
    listener = Listener("namespace_listener")
    try:
        listener.listen_status(f"{NODE}/status")
        listener.wait_status("active", timeout=180, node=node, topic=f"{NODE}/status")
        yield node, listener, {**SMALL_MODEL, **overrides}
    finally:
        listener.close()
        node.stop()


def test_the_shipped_file_applies_in_a_namespace(robot):
    node, listener, overrides = robot
    from refseg_ros.ros.params import PARAMETERS

    file_values = read_parameters(PARAMS_FILE)
    expected = {k: v for k, v in file_values.items() if k not in overrides}
    # The file must say something the node would not default to, or this proves nothing.
    differs = {k for k, v in expected.items() if v != PARAMETERS[k].default}
    assert "checkpoint" in differs, differs
    got = get_parameters(listener, NODE, sorted(expected))
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, f"parameters of {NODE} (node's, file's) that differ: {wrong}"
    assert got["checkpoint"] == "auto" and got["cameras"] == ["camera/image_raw"]
    assert get_parameters(listener, NODE, sorted(overrides)) == overrides


def test_topics_and_services_move_with_the_namespace(robot):
    node, listener, _ = robot
    from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
    from refseg_ros.srv import ListTargets
    from sensor_msgs.msg import Image

    camera = f"{NAMESPACE}/camera/image_raw"
    objects, mask = f"{camera}/refseg/objects", f"{camera}/refseg/mask"
    listener.listen(objects, SegmentedObjectArray)
    listener.listen(mask, Image)
    listener.publish_when_heard(f"{NODE}/reference", ReferenceTarget, scene_reference(W, H), node=node)
    taught = listener.wait_status("taught target", timeout=60, node=node, topic=f"{NODE}/status")
    assert "(reference) on every camera" in taught
    reply = listener.call(ListTargets, f"{NODE}/list_targets", ListTargets.Request(), timeout=60)
    assert reply.success and len(reply.targets) == 1, reply.message

    pub = listener.publisher(camera, Image)
    listener.wait_for(lambda: pub.get_subscription_count() > 0, 60, f"the node's subscription on {camera}", node)
    frame, _ = scene(W, H, 0)

    def segmented():
        pub.publish(image_msg(frame, "rgb8", "robot1_camera", listener.node.get_clock().now().to_msg()))
        return (any(m.objects for _, m in listener.received(objects))
                and any(m.height == H and m.width == W for _, m in listener.received(mask)))

    listener.wait_for(segmented, 120, f"results on {objects} and {mask}", node)

    ours = {name for name, _ in listener.node.get_topic_names_and_types()
            if "refseg" in name or "camera" in name}
    outside = sorted(n for n in ours if not n.startswith(f"{NAMESPACE}/"))
    assert not outside, f"topics outside {NAMESPACE}: {outside}"
    assert {f"{NODE}/status", f"{NODE}/reference", f"{NODE}/caption", objects, mask} <= ours, sorted(ours)
    services = {name for name, _ in listener.node.get_service_names_and_types()}
    assert {f"{NODE}/add_target", f"{NODE}/list_targets", f"{NODE}/get_parameters"} <= services
    assert not {s for s in services if s.startswith("/refseg/")}, sorted(services)
    assert node.alive(), node.output()[-4000:]
