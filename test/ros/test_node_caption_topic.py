"""The caption topic as a ROS user expects it, over DDS with the node in its own process
(the small random SAM2, a tiny random OWLv2 on the grounding path, a camera process):

- the same caption again (case and whitespace aside) is the same target: published at
  1 Hz for 10 s, as `ros2 topic pub` does without --once, it leaves one target and one
  stored entry;
- `caption_topic_mode: add`: a different caption is one more target;
- `caption_topic_mode: replace` (the default): a different caption replaces the topic's
  earlier target, which keeps nothing (not listed, not tracked, not in the store, not
  after a restart); targets taught through the add_target service are untouched.
"""

from __future__ import annotations

import re
import time

from std_msgs.msg import String

from refseg_ros.srv import AddTarget
from support.node_harness import CAM0, CAM0_OBJECTS, Listener, list_targets, start_camera, start_node, wait_tracked

# the fixtures owl_folder, listener and procs: test/ros/conftest.py
STATUS = "/refseg/status"
CAPTION = "/refseg/caption"
ANSWERS = ("taught target", "replaced target", "caption ", "rejected caption")


def answers(listener: Listener, since: int) -> list[str]:
    """The node's answers to captions on its status topic, from index `since`."""
    return [m.data for _, m in listener.received(STATUS)[since:] if m.data.startswith(ANSWERS)]


def say(listener: Listener, node, text: str) -> str:
    """Publish one caption (as `ros2 topic pub --once`); the node's answer to it."""
    since = listener.count(STATUS)
    listener.publish_when_heard(CAPTION, String, String(data=text), node=node)
    return listener.wait_for(lambda: next(iter(answers(listener, since)), None), 60,
                             f"the node's answer to {text!r}", node)


def stored(store) -> dict[int, str]:
    """Target id -> the JSON record's text, for every target the store directory holds."""
    return {int(m.group(1)): p.read_text() for p in store.iterdir()
            for m in [re.fullmatch(r"target-(\d+)\.json", p.name)] if m}


def target_id(answer: str, pattern: str) -> int:
    found = re.search(pattern, answer)
    assert found, f"{pattern!r} not in {answer!r}"
    return int(found.group(1))


def test_the_same_caption_at_1_hz_is_one_target_and_add_mode_adds(tmp_path, owl_folder, listener, procs):
    store = tmp_path / "store"
    node = start_node(tmp_path, {"cameras": [CAM0], "store_dir": str(store), "grounding_model": str(owl_folder),
                                 "grounding_threshold": 0.5, "caption_topic_mode": "add"})
    procs.append(node)
    listener.wait_status("active", timeout=120, node=node)

    # `ros2 topic pub /refseg/caption std_msgs/String "data: ..."` without --once: 1 Hz,
    # here for 10 s, in spellings that differ only in case and whitespace.
    since = listener.count(STATUS)
    spellings = ["the red mug", "The red mug", "the  red mug ", "THE RED MUG\t", " the red\nmug"]
    listener.publish_when_heard(CAPTION, String, String(data=spellings[0]), node=node)
    pub = listener.publisher(CAPTION, String)
    for i in range(1, 10):
        time.sleep(1.0)
        pub.publish(String(data=spellings[i % len(spellings)]))
    said = listener.wait_for(lambda: (lambda a: a if len(a) >= 10 else None)(answers(listener, since)), 120,
                             "10 answers", node)
    mug = target_id(said[0], r"^taught target (\d+) 'the red mug' \(caption\)")
    assert "tracked through grounding" in said[0], said[0]
    assert said[1:] == [f"caption {s.strip()!r} already tracked as target {mug}: nothing new stored"
                        for s in (spellings * 2)[1:10]], said
    assert {t: v.caption for t, v in list_targets(listener).items()} == {mug: "the red mug"}
    assert list(stored(store)) == [mug]

    # add mode: another caption is one more target, the first one stays
    ack = say(listener, node, "a blue box")
    box = target_id(ack, r"^taught target (\d+) 'a blue box'")
    assert box != mug
    assert {t: v.caption for t, v in list_targets(listener).items()} == {mug: "the red mug", box: "a blue box"}
    assert sorted(stored(store)) == sorted([mug, box])
    assert node.alive()


def test_replace_mode_keeps_nothing_of_the_earlier_caption(tmp_path, owl_folder, listener, procs):
    store = tmp_path / "store"
    params = {"cameras": [CAM0], "store_dir": str(store), "grounding_model": str(owl_folder),
              "grounding_threshold": 0.5}  # caption_topic_mode: its default, replace
    node = start_node(tmp_path, params, name="first")
    procs.append(node)
    procs.append(start_camera(tmp_path, CAM0, "cam0_optical", rate=5))
    listener.wait_status("active", timeout=120, node=node)

    # a caption taught through the service: the topic never replaces it
    reply = listener.call(AddTarget, "/refseg/add_target", AddTarget.Request(caption="the green ball"))
    assert reply.success, reply.message
    ball = reply.target_id
    listener.wait_status(f"taught target {ball} 'the green ball'", node=node)  # before the topic's answers

    cup = target_id(say(listener, node, "the red cup"), r"^taught target (\d+) 'the red cup'")
    wait_tracked(listener, node, CAM0_OBJECTS, cup)
    assert say(listener, node, "The red cup") == f"caption 'The red cup' already tracked as target {cup}: " \
                                                 "nothing new stored"

    ack = say(listener, node, "a blue box")
    box = target_id(ack, rf"^replaced target {cup} 'the red cup' with target (\d+) 'a blue box' \(caption\)")
    assert ack.endswith(f"; forgot target(s) {cup} and their stored entries"), ack
    assert box not in (cup, ball)
    assert {t: v.caption for t, v in list_targets(listener).items()} == {ball: "the green ball", box: "a blue box"}
    assert sorted(stored(store)) == sorted([ball, box])
    assert not [p.name for p in store.iterdir() if f"{cup:06d}" in p.name or "the red cup" in p.read_text()]

    # not tracked any more: once the new target is tracked, no result names the old one
    listener.clear(CAM0_OBJECTS)
    wait_tracked(listener, node, CAM0_OBJECTS, box)
    listener.clear(CAM0_OBJECTS)
    listener.wait_for(lambda: listener.count(CAM0_OBJECTS) >= 5, 120, "5 more object arrays", node)
    assert not [o for _, array in listener.received(CAM0_OBJECTS) for o in array.objects if o.target_id == cup]

    # a restart restores the service's target and the topic's current one, nothing of the first
    node.stop()
    node = start_node(tmp_path, params, name="second")
    procs.append(node)
    listener.wait_status("active", timeout=120, node=node)
    assert {t: v.caption for t, v in list_targets(listener).items()} == {ball: "the green ball", box: "a blue box"}
    # ... and still knows which target came from the topic
    assert say(listener, node, "a blue box") == f"caption 'a blue box' already tracked as target {box}: " \
                                                "nothing new stored"
    ack = say(listener, node, "the red cup")
    cup_again = target_id(ack, rf"^replaced target {box} 'a blue box' with target (\d+) 'the red cup'")
    assert cup_again not in (cup, box, ball), "ids are never reused"
    assert {t: v.caption for t, v in list_targets(listener).items()} == {ball: "the green ball",
                                                                         cup_again: "the red cup"}
    assert sorted(stored(store)) == sorted([ball, cup_again])
    # bad input changes nothing
    assert say(listener, node, "   ").startswith("rejected caption: caption is empty")
    assert sorted(list_targets(listener)) == sorted([ball, cup_again])
    assert node.alive()
