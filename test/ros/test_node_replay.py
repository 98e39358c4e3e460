"""Replay mode over real DDS: a counted camera -> the node -> a listener. Every frame
comes out, in order, and with use_sim_time the node's clock is the simulated one (/clock).

A module of its own, so that no other node competes for the CPU while it runs.
"""

from __future__ import annotations

import threading
import time

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray

from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
from support.node_harness import Listener, read_stamps, scene_reference, stamp_key, start_camera, start_node

W, H = 320, 240


def test_replay_mode_processes_every_frame_in_order_on_sim_time(tmp_path):
    """mode: replay with use_sim_time: every frame in order, latency measured on /clock."""
    from rosgraph_msgs.msg import Clock

    listener = Listener("replay_listener")
    cam = "/replay/image_raw"
    status = "/replay_node/status"
    listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    listener.listen("/diagnostics", DiagnosticArray)
    listener.listen_status(status)
    # A simulated clock 100 s ahead of the camera's stamps: the node's latency must say ~100 s
    # (stamp_tolerance above that offset, else the node calls such stamps implausible and
    # reports latency as unknown: test_node_input_reports.py).
    clock = listener.publisher("/clock", Clock)
    ticking = threading.Event()

    def tick():
        while not ticking.wait(0.05):
            now = time.time() + 100.0
            clock.publish(Clock(clock=Time(sec=int(now), nanosec=int((now % 1) * 1e9))))

    threading.Thread(target=tick, daemon=True).start()
    node = start_node(tmp_path, {"cameras": [cam], "mode": "replay", "store_dir": "", "use_sim_time": True,
                                 "stamp_tolerance": 1000.0, "status_topic": status,
                                 "reference_topic": "/replay_node/reference"})
    camera = None
    try:
        listener.wait_status("active", timeout=90, node=node, topic=status)
        listener.publish_when_heard("/replay_node/reference", ReferenceTarget,
                                    scene_reference(W, H, frame_id="ref"), node=node)
        listener.wait_status("taught target", timeout=60, node=node, topic=status)
        count = 12
        camera = start_camera(tmp_path, cam, "replay_optical", rate=15, count=count,
                              stamps_file=tmp_path / "replay.stamps")
        try:
            listener.wait_for(lambda: listener.count(f"{cam}/refseg/objects") >= count, 180,
                              f"{count} object arrays", node)
        except AssertionError as exc:
            sent = len(read_stamps(tmp_path / "replay.stamps"))
            got = listener.count(f"{cam}/refseg/objects")
            raise AssertionError(f"{exc}\n(the camera sent {sent} frames, {got} object arrays came back; "
                                 f"camera log: {camera.output()[-1000:]!r})") from None
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
