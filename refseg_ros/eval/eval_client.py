"""The live evaluation's end of the wire: talk to one segmenter node over DDS.

It publishes the bag's camera frames (raw CDR bytes, as the bag player does) and
ReferenceTarget messages, calls the node's AddTarget and ResetTargets services, and
collects what the node says: label image plus object list per stamp, status lines and
its /diagnostics for our camera. Its rclpy context is its own and installs no signal
handler, so Ctrl-C stays a KeyboardInterrupt of the evaluation. Deciding what to send
when is the job of refseg_ros.eval.live.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from refseg_ros.eval.node_outputs import NodeObject, NodeOutput
from refseg_ros.eval.player import message_class, publisher_qos
from refseg_ros.msg import ReferenceTarget, SegmentedObjectArray
from refseg_ros.ros.camera import output_topic
from refseg_ros.ros.conversions import STATES, image_array, image_message, mask_from_message
from refseg_ros.ros.rclpy_compat import publisher_count
from refseg_ros.srv import AddTarget, ResetTargets

STATE_NAMES = {code: state.value for state, code in STATES.items()}
REFERENCE_TYPE = "refseg_ros/msg/ReferenceTarget"
# Halves (a label image without its object list, or the reverse) kept while waiting for
# their partner: as deep as the output subscriptions, so no answer that DDS could still
# deliver is dropped, and bounded, so a lost partner does not grow memory for a whole run.
MAX_UNPAIRED = 1000


def _qos(depth: int, latched: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                      else DurabilityPolicy.VOLATILE)


def _stamp_ns(header: Header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class ReplayClient:
    """One node (``/<node_name>``) reading frames of type ``camera_type`` on
    ``camera_topic`` and publishing its results under ``<camera>/<output_namespace>``."""

    def __init__(self, node_name: str, camera_topic: str, camera_type: str, camera_key: str,
                 output_namespace: str = "refseg", depth: int = 16):
        self.node_name = node_name
        self.camera_topic = camera_topic
        self.camera_key = camera_key
        self._cond = threading.Condition()
        self._labels: dict[int, tuple[np.ndarray, float]] = {}
        self._objects: dict[int, tuple[list[NodeObject], float]] = {}
        self._ready: dict[int, NodeOutput] = {}
        self._errors: list[str] = []
        self.statuses: list[str] = []
        self.camera_diagnostics: Optional[dict[str, str]] = None
        self.model_diagnostics: Optional[dict[str, str]] = None
        self.diagnostics_received = 0.0  # monotonic time of the last camera report

        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self.node = rclpy.create_node(f"{node_name}_eval", context=self.context)
            base = f"/{node_name}"
            # Outputs first and status last: hearing the (latched) status then means the
            # node has learnt about our output readers too.
            self._output_subs = [
                self.node.create_subscription(
                    Image, output_topic(camera_key, output_namespace, "mask"), self._on_labels,
                    _qos(MAX_UNPAIRED)),
                self.node.create_subscription(
                    SegmentedObjectArray, output_topic(camera_key, output_namespace, "objects"),
                    self._on_objects, _qos(MAX_UNPAIRED)),
            ]
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics,
                                          _qos(50))
            self.node.create_subscription(String, f"{base}/status", self._on_status,
                                          _qos(100, latched=True))
            self.frame_pub = self.node.create_publisher(
                message_class(camera_type), camera_topic, publisher_qos(camera_type, depth))
            self.reference_pub = self.node.create_publisher(
                ReferenceTarget, f"{base}/reference", publisher_qos(REFERENCE_TYPE, 100))
            self.add_client = self.node.create_client(AddTarget, f"{base}/add_target")
            self.reset_client = self.node.create_client(ResetTargets, f"{base}/reset_targets")
            self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
            self.executor.add_node(self.node)
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise
        self._thread = threading.Thread(target=self._spin, name="refseg-eval-dds", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ receiving
    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context went down while spinning
            pass

    def _on_labels(self, msg: Image) -> None:
        self._arrived(self._labels, msg.header, "label image", lambda: image_array(msg).copy())

    def _on_objects(self, msg: SegmentedObjectArray) -> None:
        def read() -> list[NodeObject]:
            return [NodeObject(int(o.target_id), int(o.mask_value), float(o.score),
                               STATE_NAMES.get(int(o.state), str(o.state)),
                               mask_from_message(o.mask) if (o.mask.width and o.mask.height) else None)
                    for o in msg.objects]

        self._arrived(self._objects, msg.header, "object list", read)

    def _arrived(self, halves: dict[int, tuple[Any, float]], header: Header, what: str,
                 read: Callable[[], Any]) -> None:
        """Keep one half (label image or object list) of a stamp's answer; pair it up."""
        stamp = _stamp_ns(header)
        try:
            value = read()
        except ValueError as exc:
            self._error(f"{what} at stamp {stamp} cannot be read: {exc}")
            return
        with self._cond:
            halves[stamp] = (value, time.monotonic())
            self._pair(stamp)
            if len(halves) > MAX_UNPAIRED:
                oldest = min(halves)
                del halves[oldest]
                self._errors.append(f"{what} at stamp {oldest} never got its partner; dropped")
                self._cond.notify_all()

    def _pair(self, stamp: int) -> None:
        if stamp in self._labels and stamp in self._objects:
            labels, t1 = self._labels.pop(stamp)
            objects, t2 = self._objects.pop(stamp)
            self._ready[stamp] = NodeOutput(stamp, labels, objects, max(t1, t2))
            self._cond.notify_all()

    def _on_status(self, msg: String) -> None:
        with self._cond:
            self.statuses.append(msg.data)
            self._cond.notify_all()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            values["message"] = status.message
            with self._cond:
                if status.name == f"{self.node_name}: camera {self.camera_key}":
                    self.camera_diagnostics = values
                    self.diagnostics_received = time.monotonic()
                    self._cond.notify_all()
                elif status.name == f"{self.node_name}: model":
                    self.model_diagnostics = values

    def _error(self, text: str) -> None:
        with self._cond:
            self._errors.append(text)
            self._cond.notify_all()

    # ------------------------------------------------------------------- querying
    def wait(self, timeout: float) -> None:
        """Sleep until something arrives or ``timeout`` s pass."""
        with self._cond:
            self._cond.wait(timeout)

    def take(self, stamp_ns: int) -> Optional[NodeOutput]:
        """The node's answer for the frame stamped ``stamp_ns``, once (None: not yet)."""
        with self._cond:
            return self._ready.pop(stamp_ns, None)

    def errors(self) -> list[str]:
        with self._cond:
            return list(self._errors)

    def status_lines(self, since: int = 0) -> list[str]:
        with self._cond:
            return self.statuses[since:]

    def connected(self) -> bool:
        """The node reads our frames and references, and we read its outputs."""
        return (self.frame_pub.get_subscription_count() > 0
                and self.reference_pub.get_subscription_count() > 0
                and all(publisher_count(self.node, s) > 0 for s in self._output_subs))

    def services_ready(self) -> bool:
        return self.add_client.service_is_ready() and self.reset_client.service_is_ready()

    # -------------------------------------------------------------------- sending
    def publish_frame(self, raw: bytes) -> float:
        """Publish a frame's CDR bytes; returns time.monotonic() at publishing."""
        now = time.monotonic()
        self.frame_pub.publish(raw)
        return now

    def publish_reference(self, target_id: int, label: str, image: np.ndarray,
                          mask: np.ndarray, add_view: bool = False) -> None:
        """Teach by example on the node's reference topic (every camera); ``add_view``:
        one more example of the known target ``target_id``."""
        header = Header()
        msg = ReferenceTarget(header=header, target_id=int(target_id), label=label, camera="",
                              add_view=add_view)
        msg.image = image_message(image, "rgb8", header)
        msg.mask = image_message(np.where(mask, 255, 0).astype(np.uint8), "mono8", header)
        self.reference_pub.publish(msg)

    def add_mask_target(self, label: str, image: np.ndarray, mask: np.ndarray, timeout: float,
                        alive: Callable[[], bool]) -> Any:
        """AddTarget: ``mask`` drawn on ``image``, on our camera; returns the response."""
        header = Header()
        req = AddTarget.Request(camera=self.camera_topic, label=label)
        req.image = image_message(image, "rgb8", header)
        req.mask = image_message(np.where(mask, 255, 0).astype(np.uint8), "mono8", header)
        return self._call(self.add_client, req, timeout, alive)

    def add_caption_target(self, label: str, caption: str, timeout: float, alive: Callable[[], bool]) -> Any:
        """AddTarget: a caption, on our camera; returns the response."""
        req = AddTarget.Request(camera=self.camera_topic, label=label, caption=caption)
        return self._call(self.add_client, req, timeout, alive)

    def reset_targets(self, timeout: float, alive: Callable[[], bool]) -> Any:
        return self._call(self.reset_client, ResetTargets.Request(camera=""), timeout, alive)

    def _call(self, client: Any, request: Any, timeout: float, alive: Callable[[], bool]) -> Any:
        """The response, or None when the node dies or ``timeout`` s pass first."""
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() > deadline or not alive():
                return None
            time.sleep(0.02)
        future = client.call_async(request)
        while not future.done():
            if time.monotonic() > deadline or not alive():
                future.cancel()
                return None
            time.sleep(0.002)
        return future.result()

    # ------------------------------------------------------------------- shutdown
    def close(self) -> None:
        try:
            self.executor.shutdown(timeout_sec=2.0)
        finally:
            self._thread.join(timeout=5.0)
            self.node.destroy_node()
            rclpy.try_shutdown(context=self.context)
