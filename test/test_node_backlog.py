"""Live mode never builds a backlog: a camera at 30 Hz against a model that needs far longer
per frame (image_size 512 on CPU). The age of published results (receive time minus the
source stamp) stays bounded instead of growing, the node's memory does not grow, and the
frames it skipped are counted in /diagnostics.

The image subscription is made reliable here (parameter qos_reliability): with the
default sensor-data QoS (best effort), Fast DDS on these machines delivers almost none of
the fragmented 900 kB samples of a 640x480 rgb8 stream, whatever the node does; 320x240
arrives in full. Live mode's mailbox is what keeps the node current, not the QoS.
"""

from __future__ import annotations

import statistics
import time

from _node_harness import Listener, scene_reference, start_camera, start_node
from diagnostic_msgs.msg import DiagnosticArray

from refseg_ros.msg import SegmentedObjectArray

W, H = 640, 480
CAM0 = "/cam0/image_raw"
OBJECTS = f"{CAM0}/refseg/objects"
MEASURE_S = 15.0


def camera_diagnostics(listener: Listener) -> dict[str, str]:
    for _, array in reversed(listener.received("/diagnostics")):
        for status in array.status:
            if status.hardware_id == CAM0:
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_live_mode_drops_instead_of_queueing(tmp_path):
    listener = Listener("backlog_listener")
    listener.listen_status()
    listener.listen(OBJECTS, SegmentedObjectArray)
    listener.listen("/diagnostics", DiagnosticArray)
    node = start_node(tmp_path, {"cameras": [CAM0], "image_size": 512, "store_dir": "",
                                 "qos_reliability": "reliable"})
    camera = start_camera(tmp_path, CAM0, "cam0", rate=30, width=W, height=H)
    try:
        listener.wait_status("active", timeout=90, node=node)
        listener.teach(scene_reference(W, H), timeout=60, node=node)
        listener.wait_for(lambda: any(m.objects for _, m in listener.received(OBJECTS)), 60, "first result", node)
        time.sleep(2.0)  # past the first, slower steps

        start = time.time()
        rss = []
        while time.time() - start < MEASURE_S:
            rss.append(node.rss_bytes())
            time.sleep(0.5)
        samples = [(received, received - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9))
                   for received, m in listener.received(OBJECTS) if received >= start and m.objects]
        assert len(samples) >= 5, f"only {len(samples)} results in {MEASURE_S} s"
        ages = [age for _, age in samples]
        third = MEASURE_S / 3
        early = [age for t, age in samples if t < start + third]
        late = [age for t, age in samples if t >= start + 2 * third]
        diag = listener.wait_for(lambda: (d := camera_diagnostics(listener)) and d.get("step_time_ms") != "n/a" and d,
                                 10, "diagnostics", node)
        step = float(diag["step_time_ms"]) / 1e3
        report = (f"ages {min(ages):.2f}..{max(ages):.2f} s (early mean {statistics.mean(early):.2f}, "
                  f"late mean {statistics.mean(late):.2f}), step {step:.2f} s, diagnostics {diag}")
        # A queue would age by (1 - processing rate / 30 Hz) seconds per second: > 13 s here.
        assert max(ages) < 6.0, report
        assert statistics.mean(late) < statistics.mean(early) + 1.0, report
        growth = max(rss[len(rss) // 3:]) - rss[len(rss) // 3]
        assert growth < 150 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB while processing"
        assert float(diag["input_rate_hz"]) > 10, report
        assert float(diag["input_rate_hz"]) > 3 * float(diag["processed_rate_hz"]), report
        assert int(diag["frames_dropped"]) > int(diag["frames_processed"]), report
        assert int(diag["frames_dropped"]) > 100, report
        print(report)
    finally:
        camera.stop()
        node.stop()
        listener.close()
