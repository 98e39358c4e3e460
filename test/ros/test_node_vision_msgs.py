"""vision_msgs detections and target TF frames over real DDS: an RGB-D camera
(test/support/depth_camera.py: the synthetic scene with exact depth and intrinsics) in its own
process, the node in another, a listener here.

vision_msgs and tf2_msgs are the real packages where installed; here they are stand-ins
built from their published field layouts (test/support/standins.py, test/support/standin_msgs/), on the
node's and this process's paths. Every detection, 3D detection and transform is checked
against the object array of the same stamp, which test_node_geometry.py checks against the
scene's ground truth.
"""

from __future__ import annotations

import pytest

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from refseg_ros.msg import SegmentedObjectArray
from support.node_harness import Listener, depth_topic, info_topic, start_node, start_rgbd, teach_scene_object
from support.standins import provide

RGBD = "/rgbd/image_raw"
PREFIX = "robot1/refseg/"
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    packages = provide(("vision_msgs", "tf2_msgs"))
    print(f"stand-ins: {packages.standins or 'none (real packages)'}; built in {packages.build_seconds:.1f} s")
    from tf2_msgs.msg import TFMessage
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    tmp = tmp_path_factory.mktemp("vision_msgs")
    listener = Listener("vision_msgs_listener")
    listener.listen_status()
    listener.listen(f"{RGBD}/refseg/objects", SegmentedObjectArray)
    listener.listen(f"{RGBD}/refseg/detections", Detection2DArray)
    listener.listen(f"{RGBD}/refseg/detections_3d", Detection3DArray)
    listener.listen("/tf", TFMessage, TF_QOS)
    procs = []
    try:
        node = start_node(tmp, {
            "cameras": [RGBD], "camera_info_topics": [info_topic(RGBD)], "depth_topics": [depth_topic(RGBD)],
            "depth_stamp_tolerance": 0.05, "store_dir": "", "tf_frame_prefix": PREFIX}, env=packages.env)
        procs.append(node)
        listener.wait_status("active", timeout=90, node=node)
        teach_scene_object(listener, node)
        procs.append(start_rgbd(tmp, RGBD, info_topic(RGBD), depth_topic(RGBD), "rgbd"))
        yield listener, node
    finally:
        for proc in reversed(procs):
            proc.stop()
        listener.close()


def by_stamp(listener: Listener, topic: str) -> dict:
    return {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in listener.received(topic)}


def test_detections_and_target_frames_match_the_objects(rgbd):
    listener, node = rgbd
    assert listener.wait_status("vision_msgs 4.x: detections on", node=node)
    assert listener.wait_status(f"TF frames of located targets: <optical frame> -> {PREFIX}target_<id> on /tf",
                                node=node)

    def located_arrays():
        """Object arrays with a located target whose detections, 3D detections and
        transforms have all arrived."""
        d2, d3 = by_stamp(listener, f"{RGBD}/refseg/detections"), by_stamp(listener, f"{RGBD}/refseg/detections_3d")
        tf = {}
        for _, msg in listener.received("/tf"):
            for t in msg.transforms:
                tf.setdefault((t.header.stamp.sec, t.header.stamp.nanosec), []).append(t)
        out = [(m, d2[k], d3[k], tf[k]) for k, m in by_stamp(listener, f"{RGBD}/refseg/objects").items()
               if any(o.has_position for o in m.objects) and k in d2 and k in d3 and k in tf]
        return out if len(out) >= 3 else None

    got = listener.wait_for(located_arrays, 240, "3 frames with a located target and all their outputs", node)
    for objects, d2, d3, transforms in got:
        for msg in (d2, d3):
            assert msg.header.frame_id == objects.header.frame_id == "rgbd_optical"
        visible = {str(o.target_id): o for o in objects.objects if o.bbox.width > 0}
        assert {d.id for d in d2.detections} == set(visible)
        for det in d2.detections:
            obj = visible[det.id]
            assert det.header.stamp == objects.header.stamp
            (hyp,) = det.results
            assert hyp.hypothesis.class_id == obj.label and hyp.hypothesis.score == pytest.approx(obj.score, abs=1e-6)
            box = obj.bbox
            assert (det.bbox.size_x, det.bbox.size_y) == (box.width, box.height)
            assert (det.bbox.center.position.x, det.bbox.center.position.y) == (
                box.x_offset + (box.width - 1) / 2, box.y_offset + (box.height - 1) / 2)
        placed = {str(o.target_id): o for o in objects.objects if o.has_position}
        assert {d.id for d in d3.detections} == set(placed)
        for det in d3.detections:
            p, c = placed[det.id].position, det.bbox.center
            assert (c.position.x, c.position.y, c.position.z) == pytest.approx((p.x, p.y, p.z), abs=1e-9)
            assert det.results[0].hypothesis.class_id == placed[det.id].label
            assert det.bbox.size.x > 0 and det.bbox.size.y > 0 and det.bbox.size.z == 0
        assert sorted(t.child_frame_id for t in transforms) == sorted(f"{PREFIX}target_{i}" for i in placed)
        for t in transforms:
            p = placed[t.child_frame_id.rsplit("_", 1)[1]].position
            tr = t.transform.translation
            assert t.header.frame_id == "rgbd_optical"
            assert (tr.x, tr.y, tr.z) == pytest.approx((p.x, p.y, p.z), abs=1e-9)
            assert t.transform.rotation.w == 1.0
