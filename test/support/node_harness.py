"""Fixture helpers for the node tests: a synthetic scene, the node as a real process, and
a listener (an rclpy node in the test process, on its own context) that records what the
node publishes and calls its services.

Every process gets the session's private ROS domain and localhost-only discovery from
os.environ (see conftest.py); the processes are support.processes.Process.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from refseg_ros import imaging

from . import TEST_DIR
from .processes import Process

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)  # for the node's status topic
# The small random model every node test runs: real SAM2 architecture, CPU.
SMALL_MODEL = {"model": "sam2.1_hiera_t", "image_size": 256, "device": "cpu"}
# The first camera of most node tests, and the topic of its object arrays.
CAM0 = "/cam0/image_raw"
CAM0_OBJECTS = f"{CAM0}/refseg/objects"


# ------------------------------------------------------------------------------ scene
def scene(width: int, height: int, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A frame (RGB) with a red square that drifts slowly, and the square's mask."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8) // 3
    frame[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8) // 3
    frame[..., 2] = 90
    side = max(height // 4, 4)
    x0 = width // 4 + (t % 20)
    y0 = height // 3
    mask = np.zeros((height, width), bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    frame[mask] = (220, 30, 30)
    return frame, mask


def image_msg(array: np.ndarray, encoding: str, frame_id: str = "", stamp=None):
    from sensor_msgs.msg import Image

    msg = Image()
    for key, value in imaging.array_to_image_fields(array, encoding).items():
        setattr(msg, key, value)
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def teach_scene_object(listener: "Listener", node: Process, height: int = 240, width: int = 320) -> str:
    """Teach the synthetic scene's (refseg_ros.eval.synthetic) first object by its reference
    (image and mask, height x width); the node's "taught target" status."""
    from refseg_ros.eval import synthetic
    from refseg_ros.msg import ReferenceTarget

    ref = synthetic.render_reference(1, height, width)
    return listener.teach(ReferenceTarget(label=ref.label, image=image_msg(ref.image, "rgb8"),
                                          mask=image_msg(ref.mask.astype(np.uint8) * 255, "mono8")),
                          timeout=60, node=node)


def scene_reference(width: int, height: int, label: str = "square", camera: str = "", frame_id: str = ""):
    """A ReferenceTarget teaching the scene's square: its first frame and the square's mask."""
    from refseg_ros.msg import ReferenceTarget

    frame, mask = scene(width, height, 0)
    return ReferenceTarget(label=label, camera=camera, image=image_msg(frame, "rgb8", frame_id),
                           mask=image_msg(mask.astype(np.uint8) * 255, "mono8", frame_id))


def stamp_key(stamp) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


def read_stamps(path: Path) -> set[tuple[int, int]]:
    """The (sec, nanosec) stamps a camera process wrote with --stamps."""
    if not path.exists():
        return set()
    return {tuple(int(v) for v in line.split()) for line in path.read_text().splitlines() if line.strip()}


# ---------------------------------------------------------------------------- process
def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(f"'{v}'" for v in value) + "]"
    if value == "":
        return "''"
    return str(value)


def start_node(log_dir: Path, params: dict[str, Any], autostart: bool = True, name: str = "node",
               params_file: Optional[Path] = None, ros_args: tuple[str, ...] = (),
               env: Optional[dict[str, str]] = None, launcher: Sequence[str] = ("-m", "refseg_ros.ros.main"),
               options: Sequence[str] = ()) -> Process:
    """`python -m refseg_ros.ros.main [OPTIONS] --ros-args [ros_args] [--params-file F] -p ...`
    with the small model (ros_args: e.g. ("-r", "__ns:=/robot1")); `launcher` replaces
    `-m refseg_ros.ros.main` (python's arguments before the node's own)."""
    args = [*launcher, *([] if autostart else ["--no-autostart"]), *options, "--ros-args", *ros_args]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for key, value in {**SMALL_MODEL, **params}.items():
        args += ["-p", f"{key}:={_param(value)}"]
    return Process(args, log_dir / f"{name}.log", env)


def start_camera(log_dir: Path, topic: str, frame_id: str, rate: float = 10.0, width: int = 320,
                 height: int = 240, compressed: bool = False, count: int = 0, reliable: bool = True,
                 stamps_file: Optional[Path] = None, name: str = "camera", subscribers: int = 1) -> Process:
    """The camera publisher process (support/camera.py); it starts once `subscribers`
    subscribers are matched."""
    args = ["-m", "support.camera", "--topic", topic, "--frame-id", frame_id, "--rate", str(rate),
            "--width", str(width), "--height", str(height), "--count", str(count),
            "--subscribers", str(subscribers)]
    if compressed:
        args.append("--compressed")
    if not reliable:
        args.append("--best-effort")
    if stamps_file is not None:
        args += ["--stamps", str(stamps_file)]
    return Process(args, log_dir / f"{name}.log", cwd=TEST_DIR)


def start_rgbd(log_dir: Path, topic: str, info: str, depth: str, name: str, encoding: str = "32FC1",
               depth_offset: float = 0.0, gt: Optional[Path] = None, frames: int = 12, width: int = 320,
               height: int = 240) -> Process:
    """The RGB-D camera process (support/depth_camera.py): the synthetic scene at 2 Hz on
    `topic`, its CameraInfo on `info` (none when empty) and its depth on `depth`
    (`encoding` 32FC1 or 16UC1, stamped `depth_offset` s later), `frames` frames looped,
    frame id `<name>_optical`; with `gt`, each frame's stamp and index appended there."""
    args = ["-m", "support.depth_camera", "--topic", topic, "--frame-id", f"{name}_optical", "--depth", depth,
            "--encoding", encoding, "--depth-offset", str(depth_offset), "--rate", "2",
            "--frames", str(frames), "--width", str(width), "--height", str(height)]
    if info:
        args += ["--info", info]
    if gt is not None:
        args += ["--gt", str(gt)]
    return Process(args, log_dir / f"{name}.log", cwd=TEST_DIR)


def info_topic(cam: str) -> str:
    """The CameraInfo topic beside the image topic `cam`."""
    return cam.rsplit("/", 1)[0] + "/camera_info"


def depth_topic(cam: str) -> str:
    """The depth image topic beside the image topic `cam`."""
    return cam.rsplit("/", 1)[0] + "/depth/image_raw"


def start_follow(log_dir: Path, params: dict[str, Any]) -> Process:
    """`python -m refseg_ros.ros.follow_node --ros-args -p ...` (the refseg-follow entry point)."""
    args = ["-m", "refseg_ros.ros.follow_node", "--ros-args"]
    for key, value in params.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return Process(args, log_dir / "follow.log")


# ---------------------------------------------------------------------------- listener
class Listener:
    """Records messages per topic (with receive time) and calls services, in this process."""

    def __init__(self, name: str = "listener"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.executor.add_node(self.node)
        self.messages: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._subs: dict[str, Any] = {}
        self._pubs: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shutdown while spinning
            pass

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self._thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ---------------------------------------------------------------- topics
    def listen(self, topic: str, msg_type, qos: QoSProfile = RELIABLE) -> None:
        if topic in self._subs:
            return

        def record(msg, topic=topic):
            with self._lock:
                self.messages[topic].append((time.time(), msg))

        self._subs[topic] = self.node.create_subscription(msg_type, topic, record, qos)

    def listen_status(self, topic: str = "/refseg/status") -> None:
        """The node's status events, including the ones sent before we joined."""
        from std_msgs.msg import String

        self.listen(topic, String, LATCHED)

    def unlisten(self, topic: str) -> None:
        sub = self._subs.pop(topic, None)
        if sub is not None:
            self.node.destroy_subscription(sub)

    def received(self, topic: str) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.messages[topic])

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.messages[topic])

    def clear(self, topic: Optional[str] = None) -> None:
        with self._lock:
            if topic is None:
                self.messages.clear()
            else:
                self.messages[topic] = []

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str = "condition",
                 node: Optional[Process] = None) -> Any:
        """Poll `predicate` until truthy; fail with `what` (and the node's log) on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if node is not None and not node.alive():
                raise AssertionError(f"node died while waiting for {what}:\n{node.output()[-4000:]}")
            time.sleep(0.05)
        log = f"\nnode log:\n{node.output()[-4000:]}" if node is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")

    def wait_status(self, pattern: str, since: int = 0, timeout: float = 30.0,
                    node: Optional[Process] = None, topic: str = "/refseg/status") -> str:
        """The first status message (from index `since`) containing `pattern`."""
        def find():
            for _, msg in self.received(topic)[since:]:
                if pattern in msg.data:
                    return msg.data
            return None

        return self.wait_for(find, timeout, f"status containing {pattern!r}", node)

    def publisher(self, topic: str, msg_type, qos: QoSProfile = RELIABLE):
        if topic not in self._pubs:
            self._pubs[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self._pubs[topic]

    def publish_when_heard(self, topic: str, msg_type, msg, timeout: float = 30.0,
                           node: Optional[Process] = None, qos: QoSProfile = RELIABLE) -> None:
        """Publish once the node subscribes to `topic`.

        The first time, wait a moment more: the publisher may see the subscriber before the
        subscriber knows the publisher, and a best-effort reader drops what comes earlier.
        """
        fresh = topic not in self._pubs
        pub = self.publisher(topic, msg_type, qos)
        self.wait_for(lambda: pub.get_subscription_count() > 0, timeout, f"a subscriber on {topic}", node)
        if fresh:
            time.sleep(1.0)
        pub.publish(msg)

    def teach(self, reference, since: int = 0, timeout: float = 30.0, node: Optional[Process] = None,
              topic: str = "/refseg/reference") -> str:
        """Publish a ReferenceTarget once the node listens; the node's "taught target" status."""
        from refseg_ros.msg import ReferenceTarget

        self.publish_when_heard(topic, ReferenceTarget, reference, node=node)
        return self.wait_status("taught target", since, timeout, node)

    # -------------------------------------------------------------- services
    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available after {timeout} s")
            return self.call_with(client, request, timeout)
        finally:
            self.node.destroy_client(client)

    def client(self, srv_type, name: str):
        return self.node.create_client(srv_type, name)

    def call_with(self, client, request, timeout: float = 30.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise AssertionError(f"service {client.srv_name} did not answer within {timeout} s")
            time.sleep(0.002)
        return future.result()


# ------------------------------------------------------------------------- captions
def list_targets(listener: Listener, timeout: float = 60.0) -> dict[int, Any]:
    """The node's list_targets answer: target id -> TargetInfo."""
    from refseg_ros.srv import ListTargets

    reply = listener.call(ListTargets, "/refseg/list_targets", ListTargets.Request(), timeout=timeout)
    assert reply.success, reply.message
    return {t.target_id: t for t in reply.targets}


def teach_caption(listener: Listener, node: Process, text: str) -> str:
    """Publish a caption once the node listens; its status answer (taught or rejected)."""
    from std_msgs.msg import String

    since = listener.count("/refseg/status")
    listener.publish_when_heard("/refseg/caption", String, String(data=text), node=node)

    def answer():
        return next((m.data for _, m in listener.received("/refseg/status")[since:]
                     if m.data.startswith(("taught target", "rejected caption"))), None)
    return listener.wait_for(answer, 60, "the node's answer to a caption", node)


def wait_tracked(listener: Listener, node: Process, topic: str, tid: int, frames: int = 3,
                 timeout: float = 120.0) -> None:
    """Wait until `frames` object arrays in a row on `topic` carry `tid` tracked with a mask."""
    from refseg_ros.msg import SegmentedObject

    def run():
        streak = 0
        for _, array in listener.received(topic):
            hit = any(o.target_id == tid and o.state == SegmentedObject.STATE_TRACKED and o.area > 0
                      for o in array.objects)
            streak = streak + 1 if hit else 0
            if streak >= frames:
                return True
        return False
    listener.wait_for(run, timeout, f"target {tid} tracked on {frames} frames in a row", node)


def lifecycle_state(listener: Listener, node: str = "/refseg") -> int:
    """The node's lifecycle state id (lifecycle_msgs/State), through its get_state service."""
    from lifecycle_msgs.srv import GetState

    return listener.call(GetState, f"{node}/get_state", GetState.Request(), timeout=60).current_state.id


def change_lifecycle(listener: Listener, transition_id: int, node: str = "/refseg") -> bool:
    """Ask the node for a lifecycle transition (lifecycle_msgs/Transition id); whether it succeeded."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition_id))
    return listener.call(ChangeState, f"{node}/change_state", request, timeout=120).success


def get_parameters(listener: Listener, node: str, names: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """The values of parameters `names` of the node `node` (fully qualified), through its
    own get_parameters service."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    reply = listener.call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=names), timeout)
    assert len(reply.values) == len(names), f"{node} answered {len(reply.values)} values for {names}"
    return {name: parameter_value_to_python(value) for name, value in zip(names, reply.values)}
