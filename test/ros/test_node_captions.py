"""Captions through the node over DDS, on the grounding path: a tiny random-weight OWLv2
saved to a folder (the node loads it through `grounding_model`), the small SAM2, a
camera process. A caption becomes a tracked target with a result per frame; it can be
replaced keeping its id; two captions are two targets; a restart keeps them; bad
captions get a reason and change nothing else.
"""

from __future__ import annotations

import re

from rclpy.serialization import serialize_message
from std_msgs.msg import String

from refseg_ros.srv import AddTarget
from support.node_harness import CAM0, CAM0_OBJECTS, list_targets, start_camera, start_node, teach_caption, wait_tracked



def test_captions_are_tracked_replaced_and_restored(tmp_path, owl_folder, listener, procs):
    params = {"cameras": [CAM0], "store_dir": str(tmp_path / "store"), "grounding_model": str(owl_folder),
              "grounding_threshold": 0.5, "caption_topic_mode": "add"}  # two captions on the topic, two targets
    node = start_node(tmp_path, params, name="first")
    procs.append(node)
    procs.append(start_camera(tmp_path, CAM0, "cam0_optical", rate=5))
    listener.wait_status("active", timeout=120, node=node)

    ack = teach_caption(listener, node, "the red cup")
    assert "tracked through grounding" in ack, ack
    cup = int(re.search(r"taught target (\d+)", ack).group(1))
    wait_tracked(listener, node, CAM0_OBJECTS, cup)
    listed = list_targets(listener)[cup]
    assert (listed.kind, listed.caption, listed.path, listed.status) == ("caption", "the red cup", "grounding",
                                                                         "tracked")

    # a second caption is a second target
    ack = teach_caption(listener, node, "a blue box")
    box = int(re.search(r"taught target (\d+)", ack).group(1))
    assert box != cup
    wait_tracked(listener, node, CAM0_OBJECTS, box)

    # replaced at run time: same id, new caption, tracked again
    reply = listener.call(AddTarget, "/refseg/add_target",
                          AddTarget.Request(target_id=cup, caption="the green mug"))
    assert reply.success and reply.target_id == cup and reply.message.startswith("replaced"), reply.message
    listed = list_targets(listener)
    assert listed[cup].caption == "the green mug" and listed[box].caption == "a blue box"
    listener.clear(CAM0_OBJECTS)
    wait_tracked(listener, node, CAM0_OBJECTS, cup)

    # bad captions: a reason each, nothing else changes
    for text, reason in (("", "caption is empty"), ("   \t ", "caption is empty"),
                         ("x" * 10_000, "characters long")):
        assert reason in teach_caption(listener, node, text)
    since = listener.count("/refseg/status")
    raw = bytearray(serialize_message(String(data="abcd")))
    raw[9:11] = b"\xff\xfe"  # inside the string's bytes: invalid UTF-8
    listener.publish_when_heard("/refseg/caption", String, bytes(raw), node=node)
    assert "not valid UTF-8" in listener.wait_status("rejected caption", since, node=node)
    reply = listener.call(AddTarget, "/refseg/add_target", AddTarget.Request(target_id=99, caption="a cat"))
    assert not reply.success and "no target 99 to replace" in reply.message
    assert {t: (v.caption, v.path) for t, v in list_targets(listener).items()} == {
        cup: ("the green mug", "grounding"), box: ("a blue box", "grounding")}

    # a restart keeps them, tracked through the same path
    node.stop()
    node = start_node(tmp_path, params, name="second")
    procs.append(node)
    listener.wait_status("active", timeout=120, node=node)
    listed = list_targets(listener)
    assert {t: (v.caption, v.path) for t, v in listed.items()} == {
        cup: ("the green mug", "grounding"), box: ("a blue box", "grounding")}
    listener.clear(CAM0_OBJECTS)
    wait_tracked(listener, node, CAM0_OBJECTS, cup)


def test_a_missing_text_model_keeps_captions_waiting(tmp_path, listener, procs):
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": "",
                                 "grounding_model": str(tmp_path / "no_such_folder")})
    procs.append(node)
    status = listener.wait_status("active", timeout=120, node=node)
    assert status
    ack = teach_caption(listener, node, "the red cup")
    assert "is waiting: the grounding text path could not be loaded" in ack and "no_such_folder" in ack, ack
    listed = list(list_targets(listener).values())
    assert [(t.status, t.path) for t in listed] == [("waiting", "")]
    assert node.alive()
