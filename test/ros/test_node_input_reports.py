"""What the node says about camera input that is not what it should be, over real DDS:
implausible headers (a zero stamp, a stamp far from the node's clock, an empty frame id),
frames that cannot arrive (a publisher with incompatible QoS), and a clean stop on Ctrl-C
while frames flow."""

from __future__ import annotations

import signal
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from refseg_ros.msg import SegmentedObjectArray
from support.node_harness import Listener, image_msg, scene, scene_reference, start_camera, start_node

W, H = 320, 240


def camera_status(listener: Listener, camera: str):
    for _, array in reversed(listener.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == camera:
                return status
    return None


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_implausible_headers_warn_once_and_latency_is_unknown(tmp_path):
    cam = "/hdr/image_raw"
    listener = Listener("header_listener")
    listener.listen_status()
    listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    listener.listen("/diagnostics", DiagnosticArray)
    node = start_node(tmp_path, {"cameras": [cam], "store_dir": "", "diagnostics_period": 0.3})
    try:
        listener.wait_status("active", timeout=90, node=node)
        listener.teach(scene_reference(W, H), timeout=60, node=node)
        frame, _ = scene(W, H, 0)
        outputs = f"{cam}/refseg/objects"

        def send(msg, n_before):
            listener.publish_when_heard(cam, Image, msg, node=node)
            listener.wait_for(lambda: listener.count(outputs) > n_before, 60, "an object array", node)

        since = listener.count("/refseg/status")
        for _ in range(3):  # the same fault three times: said once
            send(image_msg(frame, "rgb8", ""), listener.count(outputs))
        time.sleep(1.0)
        said = [m.data for _, m in listener.received("/refseg/status")[since:] if "implausible header" in m.data]
        assert len(said) == 2, said
        assert any("header.stamp is 0" in s for s in said) and any("frame_id is empty" in s for s in said)
        assert all(s.startswith(f"camera {cam}: implausible header") for s in said)
        status = listener.wait_for(lambda: (s := camera_status(listener, cam)) and values(s)["frames_processed"] == "3"
                                   and s, 30, "diagnostics after three frames", node)
        assert status.level == DiagnosticStatus.WARN and "implausible header" in status.message
        assert values(status)["latency_ms"] == "n/a", values(status)  # not 1.7e12 ms
        # Headers stay as they came (results are stamped with the source header).
        assert listener.received(outputs)[-1][1].header.stamp.sec == 0

        # An hour ahead of the clock: a new kind of fault, said once.
        ahead = image_msg(frame, "rgb8", "cam_optical")
        ahead.header.stamp.sec = int(time.time()) + 3600
        since = listener.count("/refseg/status")
        send(ahead, listener.count(outputs))
        text = listener.wait_status("ahead of this node's clock", since, node=node)
        assert "3600" in text or "3599" in text, text

        # A plausible frame: OK again, latency known.
        good = image_msg(frame, "rgb8", "cam_optical", stamp=None)
        now = time.time()
        good.header.stamp.sec, good.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        send(good, listener.count(outputs))
        listener.wait_for(
            lambda: (s := camera_status(listener, cam)) and s.level == DiagnosticStatus.OK
            and values(s)["latency_ms"] != "n/a", 30, "diagnostics OK, latency known, after a plausible frame", node)
    finally:
        node.stop()
        listener.close()


def test_frames_that_cannot_arrive_are_reported(tmp_path):
    """A best-effort camera and a node that asks for reliable frames: DDS never matches
    them, so not one frame arrives; the node says why on status and in /diagnostics."""
    cam = "/qos/image_raw"
    listener = Listener("qos_listener")
    listener.listen_status()
    listener.listen("/diagnostics", DiagnosticArray)
    node = start_node(tmp_path, {"cameras": [cam], "store_dir": "", "qos_reliability": "reliable"})
    camera = start_camera(tmp_path, cam, "qos_cam", rate=10, width=W, height=H, reliable=False)
    try:
        listener.wait_status("active", timeout=90, node=node)
        text = listener.wait_status("incompatible", timeout=60, node=node)
        assert text.startswith(f"camera {cam}") and "(reliability)" in text and "qos_reliability" in text
        status = listener.wait_for(
            lambda: (s := camera_status(listener, cam)) and "no frame arrived" in s.message and s, 60,
            "a diagnosis of the missing frames", node)
        assert status.level == DiagnosticStatus.WARN
        assert "incompatible QoS" in status.message and "shared-memory" in status.message
        assert values(status)["frames_received"] == "0" and values(status)["publishers"] == "1"
        listener.wait_status("no frame arrived", timeout=30, node=node)
    finally:
        camera.stop()
        node.stop()
        listener.close()


def test_ctrl_c_while_frames_flow_stops_cleanly(tmp_path):
    cam = "/stop/image_raw"
    listener = Listener("stop_listener")
    listener.listen_status()
    listener.listen(f"{cam}/refseg/objects", SegmentedObjectArray)
    node = start_node(tmp_path, {"cameras": [cam], "store_dir": ""})
    camera = start_camera(tmp_path, cam, "stop_cam", rate=30, width=W, height=H, reliable=False)
    try:
        listener.wait_status("active", timeout=90, node=node)
        listener.teach(scene_reference(W, H), timeout=60, node=node)
        listener.wait_for(lambda: listener.count(f"{cam}/refseg/objects") >= 3, 60, "results", node)
        node.popen.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
        code = node.popen.wait(timeout=30)
        log = node.output()
        assert code == 0, log[-3000:]
        assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
    finally:
        camera.stop()
        node.stop()
        listener.close()
