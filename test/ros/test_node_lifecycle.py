"""The node's lifecycle through lifecycle_msgs services: configure, activate, deactivate,
cleanup; results flow only while active, and taught targets outlive deactivation."""

from __future__ import annotations

import time

from lifecycle_msgs.msg import State, Transition
from sensor_msgs.msg import Image

from refseg_ros.msg import SegmentedObjectArray
from refseg_ros.srv import AddTarget, ListTargets
from support.node_harness import (Listener, change_lifecycle, image_msg, lifecycle_state, scene, start_camera,
                                  start_node)

W, H = 320, 240
CAM0 = "/cam0/image_raw"
OBJECTS, MASK = f"{CAM0}/refseg/objects", f"{CAM0}/refseg/mask"


state, transition = lifecycle_state, change_lifecycle


def test_lifecycle_transitions_and_publishing(tmp_path):
    listener = Listener("lifecycle_listener")
    listener.listen(OBJECTS, SegmentedObjectArray)
    listener.listen(MASK, Image)
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": str(tmp_path / "store")}, autostart=False)
    camera = start_camera(tmp_path, CAM0, "cam0", rate=5)
    try:
        assert state(listener) == State.PRIMARY_STATE_UNCONFIGURED
        time.sleep(1.0)
        assert listener.count(OBJECTS) == 0 and listener.node.count_publishers(OBJECTS) == 0

        assert transition(listener, Transition.TRANSITION_CONFIGURE)
        assert state(listener) == State.PRIMARY_STATE_INACTIVE
        # Targets can be taught while inactive (the services come up with configure).
        frame, _ = scene(W, H, 0)
        reply = listener.call(AddTarget, "/refseg/add_target",
                              AddTarget.Request(label="boxed", image=image_msg(frame, "rgb8"),
                                                box=[80.0, 80.0, 160.0, 150.0]))
        assert reply.success, reply.message
        tid = reply.target_id
        time.sleep(1.0)
        assert listener.count(OBJECTS) == 0, "published while inactive"

        assert transition(listener, Transition.TRANSITION_ACTIVATE)
        assert state(listener) == State.PRIMARY_STATE_ACTIVE
        listener.wait_for(lambda: sum(tid in {o.target_id for o in m.objects}
                                      for _, m in listener.received(OBJECTS)) >= 2, 60, "results while active", node)

        assert transition(listener, Transition.TRANSITION_DEACTIVATE)
        assert state(listener) == State.PRIMARY_STATE_INACTIVE
        listener.wait_for(lambda: listener.node.count_publishers(OBJECTS) == 0, 10, "publishers gone", node)
        listener.clear()
        time.sleep(3.0)
        assert listener.count(OBJECTS) == 0 and listener.count(MASK) == 0, "published while inactive"
        assert camera.alive()
        listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request())
        assert [t.target_id for t in listed.targets] == [tid], "deactivate must keep the targets"

        assert transition(listener, Transition.TRANSITION_ACTIVATE)
        listener.wait_for(lambda: sum(tid in {o.target_id for o in m.objects}
                                      for _, m in listener.received(OBJECTS)) >= 2, 60, "results again", node)

        assert transition(listener, Transition.TRANSITION_DEACTIVATE)
        assert transition(listener, Transition.TRANSITION_CLEANUP)
        assert state(listener) == State.PRIMARY_STATE_UNCONFIGURED
        listener.wait_for(lambda: "/refseg/list_targets" not in dict(listener.node.get_service_names_and_types()),
                          10, "the target services gone after cleanup", node)

        # Configure again: the engine comes back and the stored target with it.
        assert transition(listener, Transition.TRANSITION_CONFIGURE)
        listed = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request())
        assert [(t.target_id, t.label) for t in listed.targets] == [(tid, "boxed")]
        assert node.alive()
    finally:
        camera.stop()
        code = node.stop()
        listener.close()
    assert code == 0, f"node exited with {code} on SIGINT:\n{node.output()[-3000:]}"
