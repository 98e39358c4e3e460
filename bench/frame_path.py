"""Which project modules one camera frame passes through in the running segmenter node,
and how large the node's code is: numbers to compare two checkouts side by side.

    . scripts/env.sh && python bench/frame_path.py [--json OUT]
    PYTHONPATH=/path/to/other/checkout:$PYTHONPATH python bench/frame_path.py   # another checkout

The node (`SegmenterNode`, the small random hiera_t model at image_size 256 on the CPU)
runs in this process on real DDS, with one camera and its CameraInfo and aligned depth
topics, and one reference target taught; a peer node publishes the frames and listens to
the mask. After two warm-up frames, a profile hook (`threading.setprofile`, every thread
the executor and the worker start) records every Python function call of one more frame,
from the image subscription's callback until the mask is published ("to mask") and until
the frame's statistics are counted, the last thing done for it ("whole frame"). It prints
the project modules (`refseg_ros.*`, the generated `refseg_ros.msg` excluded) whose
functions are called on that path, and the hops between them (consecutive project calls
in different modules), and the calls that cross from one project module into another
(caller -> callee; those of the node module listed).

Static numbers, read with `ast` from the imported package's source: lines of the class
`SegmenterNode` and of its module, of `TargetRegistry` (runtime/registry.py), and the calls
that declare a ROS parameter (`declare_parameter`/`declare_parameters`), with their files.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

CAMERA, INFO, DEPTH = "/fp/image_raw", "/fp/camera_info", "/fp/depth"
W, H = 160, 120


# ---------------------------------------------------------------------------- static
def class_lines(path: Path, name: str) -> int:
    """Lines of the class `name` in the file at `path` (decorators excluded)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node.end_lineno - node.lineno + 1
    raise LookupError(f"no class {name} in {path}")


def declaring_calls(root: Path) -> list[str]:
    """file:line of every call of `.declare_parameter(...)` or `.declare_parameters(...)`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("declare_parameter", "declare_parameters"):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    found.sort(key=lambda c: (c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])))
    return found


def static_numbers() -> dict[str, Any]:
    import refseg_ros

    root = Path(refseg_ros.__file__).resolve().parent
    node_py = root / "ros" / "node.py"
    calls = declaring_calls(root)
    return {
        "source": str(root),
        "SegmenterNode_lines": class_lines(node_py, "SegmenterNode"),
        "node_py_lines": len(node_py.read_text().splitlines()),
        "TargetRegistry_lines": class_lines(root / "runtime" / "registry.py", "TargetRegistry"),
        "declare_parameter_calls": calls,
        "declare_parameter_files": sorted({c.rsplit(":", 1)[0] for c in calls}),
    }


# --------------------------------------------------------------------------- tracing
class PathRecorder:
    """A profile hook recording project function calls while `recording` is set."""

    def __init__(self) -> None:
        self.recording = False
        self.calls: list[tuple[str, str, str, str]] = []  # (module, function, thread, calling module)
        self.mask_at: Optional[int] = None  # index in calls when the mask was published
        self.done = threading.Event()  # the frame's statistics were counted

    def hook(self, frame, event: str, arg) -> None:
        if not self.recording or event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        name = frame.f_code.co_name
        if name == "publish" and self.mask_at is None and module.startswith("rclpy"):
            topic = getattr(frame.f_locals.get("self"), "topic_name", "") or ""
            if topic.endswith("/mask"):
                self.mask_at = len(self.calls)
        if not module.startswith("refseg_ros") or module.startswith(("refseg_ros.msg", "refseg_ros.srv")):
            return
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        self.calls.append((module, name, threading.current_thread().name, caller))
        if module == "refseg_ros.runtime.stats" and name == "on_processed":
            self.recording = False
            self.done.set()


def summary(calls: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    """Modules in order of first call, hops, how often the path enters each module, and
    the calls from one project module into another."""
    modules: list[str] = []
    entries: dict[str, int] = {}
    crossing: dict[str, int] = {}
    for module, _, _, caller in calls:
        if caller != module and caller.startswith("refseg_ros"):
            edge = f"{caller.removeprefix('refseg_ros.')} -> {module.removeprefix('refseg_ros.')}"
            crossing[edge] = crossing.get(edge, 0) + 1
    for i, (module, _, _, _) in enumerate(calls):
        if module not in modules:
            modules.append(module)
        if not i or calls[i - 1][0] != module:
            entries[module] = entries.get(module, 0) + 1
    node_side = [m for m in modules if not m.startswith(("refseg_ros.engine", "refseg_ros.adapters"))]
    return {"modules": len(modules), "module_list": modules, "node_side_modules": len(node_side),
            "hops": max(sum(entries.values()) - 1, 0), "entries": entries, "calls": len(calls),
            "crossing_calls": sum(crossing.values()), "crossing": crossing,
            "threads": sorted({t for _, _, t, _ in calls})}


def image(array: np.ndarray, encoding: str, stamp=None):
    """An Image of `array` from the camera `fp_optical` (stamp: builtin_interfaces/Time or None)."""
    from std_msgs.msg import Header

    from refseg_ros.ros.conversions import image_message

    header = Header(frame_id="fp_optical")
    if stamp is not None:
        header.stamp = stamp
    return image_message(array, encoding, header)


def scene(t: int) -> tuple[np.ndarray, np.ndarray]:
    frame = np.full((H, W, 3), 90, np.uint8)
    mask = np.zeros((H, W), bool)
    mask[40:70, 30 + t:60 + t] = True
    frame[mask] = (220, 30, 30)
    return frame, mask


def trace_one_frame(timeout: float = 120.0) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from refseg_ros.msg import ReferenceTarget
    from refseg_ros.ros import requests
    from refseg_ros.ros.node import SegmenterNode

    rclpy.init()
    params = {"cameras": [CAMERA], "camera_info_topics": [INFO], "depth_topics": [DEPTH],
              "model": "sam2.1_hiera_t", "image_size": 256, "device": "cpu", "store_dir": "",
              "text_path": "none", "diagnostics_period": 1000.0}
    node = SegmenterNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    peer = rclpy.create_node("frame_path_peer")
    masks: list[Any] = []
    peer.create_subscription(Image, f"{CAMERA}/refseg/mask", masks.append, 10)
    publishers = {topic: peer.create_publisher(kind, topic, 10)
                  for topic, kind in ((CAMERA, Image), (INFO, CameraInfo), (DEPTH, Image))}
    recorder = PathRecorder()
    executor = MultiThreadedExecutor(num_threads=4)
    try:
        node.trigger_configure()
        if node.registry is None:
            raise RuntimeError("configure failed (see the log above)")
        frame0, mask0 = scene(0)
        node.registry.teach(requests.from_reference(ReferenceTarget(
            label="square", image=image(frame0, "rgb8"), mask=image(mask0.astype(np.uint8) * 255, "mono8"))))
        threading.setprofile(recorder.hook)  # threads started from here on: the executor's, the worker
        executor.add_node(node)
        executor.add_node(peer)
        threading.Thread(target=executor.spin, daemon=True, name="executor").start()
        node.trigger_activate()
        deadline = time.monotonic() + 10
        while publishers[CAMERA].get_subscription_count() == 0 or \
                publishers[DEPTH].get_subscription_count() == 0 or publishers[INFO].get_subscription_count() == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the node's subscriptions did not match")
            time.sleep(0.05)
        info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5,
                          k=[100.0, 0, W / 2, 0, 100.0, H / 2, 0, 0, 1],
                          p=[100.0, 0, W / 2, 0, 0, 100.0, H / 2, 0, 0, 0, 1, 0])
        for t in range(3):  # two warm-up frames, then the traced one
            stamp = node.get_clock().now().to_msg()
            info.header.stamp = stamp
            publishers[INFO].publish(info)
            depth = np.full((H, W), 1500, np.uint16)  # 1.5 m
            publishers[DEPTH].publish(image(depth, "16UC1", stamp))
            time.sleep(0.3)  # CameraInfo and depth come in before the frame
            before = len(masks)
            if t == 2:
                recorder.recording = True
            publishers[CAMERA].publish(image(scene(t + 1)[0], "rgb8", stamp))
            deadline = time.monotonic() + timeout
            while len(masks) == before or (t == 2 and not recorder.done.is_set()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no mask for frame {t}")
                time.sleep(0.01)
        recorder.recording = False
    finally:
        threading.setprofile(None)
        node.release()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown()
    calls = recorder.calls
    return {"to_mask": summary(calls[:recorder.mask_at]), "whole_frame": summary(calls)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    numbers = {**static_numbers(), **trace_one_frame()}
    print(f"source: {numbers['source']}")
    for key in ("to_mask", "whole_frame"):
        s = numbers[key]
        print(f"{key}: {s['modules']} project modules ({s['node_side_modules']} outside engine/ and adapters/), "
              f"{s['hops']} hops between them, {s['calls']} calls, threads {', '.join(s['threads'])}")
        print("   entries: " + " ".join(f"{m.removeprefix('refseg_ros.')}x{n}" for m, n in s["entries"].items()))
        node = {e: n for e, n in s["crossing"].items() if "ros.node" in e.split(" -> ")}
        print(f"   {s['crossing_calls']} calls across modules; those of ros.node: "
              + ", ".join(f"{e} x{n}" for e, n in node.items()))
    print(f"SegmenterNode: {numbers['SegmenterNode_lines']} lines; ros/node.py: {numbers['node_py_lines']} lines")
    print(f"TargetRegistry: {numbers['TargetRegistry_lines']} lines")
    print(f"declare_parameter calls: {len(numbers['declare_parameter_calls'])} in "
          f"{len(numbers['declare_parameter_files'])} file(s): {', '.join(numbers['declare_parameter_calls'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
