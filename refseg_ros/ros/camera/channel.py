"""One camera's ROS side: what comes in, and what goes out for each of its frames.

The image subscription takes camera messages *serialized* (CDR bytes, rclpy's
``raw=True``) and hands them to the node's mailbox (refseg_ros.runtime.mailbox): taking a
message then costs one copy and no Python object per field, so a frame that a newer one
replaces before the model gets to it costs almost nothing; only the frame the worker takes
is deserialized (`receive`). bench/ros_load.py measures both ways.

Target geometry (optional, per camera): the camera's CameraInfo (typed subscription: small
and rare) calibrates the camera's locator (refseg_ros.runtime.locator); an aligned depth
image stream arrives serialized too: its callback reads only header.stamp from the CDR
bytes and keeps the bytes in a bounded buffer by stamp (refseg_ros.runtime.pairing); the
worker deserializes only the depth message it pairs with the frame it processed.

The worker drives a taken frame through the channel's stages (refseg_ros.ros.node):
`receive` (decode, check the header, pair depth), the engine's step (the node's),
`locate` (geometry of every result) and `publish` (late results of earlier frames, then
the frame's own; ros/camera/publishers.py). Each stage reports its camera's problems on the
status topic itself (refseg_ros.ros.status) and counts into the camera's statistics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ...engine import StepResult, TargetResult
from ...runtime.geometry import TargetGeometry
from ...runtime.headers import HEADER_PROBLEMS, header_problems, plausible_latency
from ...runtime.locator import Locator, Notes
from ...runtime.mailbox import Envelope, FrameMailbox
from ...runtime.pairing import StampBuffer, cdr_header_stamp_ns
from ...runtime.render import LabelImage, label_image
from ...runtime.stats import CameraStats
from ..conversions import depth_from_message, frame_from_message, intrinsics_from_camera_info
from ..rclpy_compat import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from ..standard_outputs import StandardOutputs
from ..status import StatusReports
from .publishers import CameraPublishers


@dataclass
class CameraFrame:
    """A frame the worker took, with what each stage added to it."""

    camera: str  # the camera's key
    header: Header  # the image's header, given to every result message
    rgb: np.ndarray  # H x W x 3 uint8, RGB
    received: float  # the node's ROS clock when the message came in, seconds
    started: float  # time.perf_counter() when the worker took it
    depth: Optional[bytes] = None  # the serialized depth Image paired with it, if any yet
    result: Optional[StepResult] = None  # the engine's step; None: not stepped (no target)
    step_seconds: float = 0.0  # time the step took
    located: list[TargetGeometry] = field(default_factory=list)  # per result, in order

    @property
    def stamp(self) -> float:
        """header.stamp in seconds."""
        return self.header.stamp.sec + self.header.stamp.nanosec * 1e-9

    @property
    def stamp_ns(self) -> int:
        """header.stamp in integer nanoseconds."""
        return self.header.stamp.sec * 1_000_000_000 + self.header.stamp.nanosec

    @property
    def results(self) -> list[TargetResult]:
        """Every target's result on this frame (none when not stepped)."""
        return self.result.targets if self.result is not None else []


class CameraChannel:
    """Subscriptions, publishers and per-frame stages of one camera.

    Made at configure; `open` (activate) subscribes and makes the publishers, `close`
    (deactivate) drops them. `reports`: the node's log and status topic.
    """

    def __init__(self, name: str, topic: str, transport: str, reports: StatusReports, info_topic: str = "",
                 depth_topic: str = "", rectified: bool = False):
        """`name`: the camera's key (its image topic without a /compressed suffix); `transport`:
        raw or compressed; `info_topic`, `depth_topic`: its CameraInfo and aligned depth
        Image topics ("" none); `rectified`: whether its images are rectified (live: set
        the attribute; used from the next CameraInfo)."""
        self.name, self.topic, self.transport = name, topic, transport
        self.info_topic, self.depth_topic = info_topic, depth_topic
        self.rectified = rectified
        self.reports = reports
        self.stats = CameraStats(name)
        self.locator = Locator(info_topic, depth_topic)
        self.latest: Optional[np.ndarray] = None  # the newest decoded frame, for prompts "on the current frame"
        self.publishers: Optional[CameraPublishers] = None
        self._subscriptions: list = []
        self._mailbox: Optional[FrameMailbox] = None
        self._clock: Any = None
        self._depth: Optional[StampBuffer] = None
        self._history: dict[int, tuple[Header, np.ndarray]] = {}  # clip mode: frame index -> (header, rgb)

    @property
    def message_type(self) -> type:
        return CompressedImage if self.transport == "compressed" else Image

    # ================================================================== lifecycle
    def open(self, node: Node, mailbox: FrameMailbox, input_qos: QoSProfile, output_qos: QoSProfile,
             namespace: str, group: CallbackGroup, point_targets: Sequence[int] = (), depth_queue_size: int = 30,
             outputs: Optional[StandardOutputs] = None) -> None:
        """Make the publishers (under `namespace`, with `output_qos`; `outputs`: the node's
        standard outputs) and the subscriptions (image, CameraInfo and depth where
        configured, all with `input_qos`, in `group`); frames go to `mailbox`, at most
        `depth_queue_size` depth images wait for their frames."""
        self._mailbox, self._clock = mailbox, node.get_clock()
        self.locator.reset()
        self.publishers = CameraPublishers(node, self.name, namespace, output_qos, point_targets, outputs)
        self._subscriptions = [node.create_subscription(
            self.message_type, self.topic, self._on_frame, input_qos, callback_group=group,
            event_callbacks=self._subscription_events(), raw=True)]
        if self.info_topic:
            self._subscriptions.append(node.create_subscription(
                CameraInfo, self.info_topic, self._on_camera_info, input_qos, callback_group=group))
        if self.depth_topic:
            self._depth = StampBuffer(depth_queue_size)
            self._subscriptions.append(node.create_subscription(
                Image, self.depth_topic, self._on_depth, input_qos, callback_group=group, raw=True))

    def close(self, node: Node) -> None:
        """Drop subscriptions and publishers, and what was kept of earlier frames."""
        for sub in self._subscriptions:
            node.destroy_subscription(sub)
        if self.publishers is not None:
            self.publishers.close()
        self._subscriptions, self.publishers, self._mailbox, self._depth = [], None, None, None
        self.locator.reset()
        self.latest = None
        self._history.clear()

    def publisher_count(self, node: Node) -> int:
        """Publishers on the camera topic in the ROS graph, matched or not (a publisher with
        incompatible QoS counts too: it is there, its frames just never arrive)."""
        return node.count_publishers(self.topic)

    # ================================================================== intake
    def _on_frame(self, data: bytes) -> None:
        """A camera message (CDR bytes) into the mailbox; a frame it replaces is dropped."""
        self.stats.on_input()
        mailbox = self._mailbox  # read once: close() may drop it meanwhile
        if mailbox is not None and mailbox.put(self.name, data, self._clock.now().nanoseconds * 1e-9):
            self.stats.on_dropped()

    def _subscription_events(self) -> SubscriptionEventCallbacks:
        def incompatible(info: QoSRequestedIncompatibleQoSInfo) -> None:
            policy = info.last_policy_kind.name.removeprefix("RMW_QOS_POLICY_").lower()
            self.reports.say(f"camera {self.name}: a publisher on {self.topic} has QoS incompatible with "
                             f"this subscription ({policy}); its frames never arrive. "
                             f"Set qos_reliability to match the camera (docs/NODE.md)", error=True)

        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        """Calibrate the locator from the camera's newest valid CameraInfo; say once why an
        invalid one is refused."""
        rectified = self.rectified
        calibration = (tuple(msg.k), tuple(msg.d), tuple(msg.p), msg.width, msg.height, msg.distortion_model,
                       rectified)
        self.reports.update(self.name, self.locator.calibrate(
            calibration, lambda: intrinsics_from_camera_info(msg, rectified)))

    def _on_depth(self, data: bytes) -> None:
        buffer = self._depth  # read once: close() may drop it meanwhile
        if buffer is None:
            return
        try:
            stamp = cdr_header_stamp_ns(data)
        except ValueError:
            return  # too short to be an Image: pairing never finds it, the worker never sees it
        buffer.put(stamp, data)

    # ================================================================== stages
    def receive(self, envelope: Envelope, settings: Any) -> Optional[CameraFrame]:
        """The receive stage: the taken message decoded into a frame, its header checked
        (implausible stamps and frame ids said once), its depth paired if it has come in;
        None when the message cannot be decoded (rejected, with the reason). `settings`:
        the node's."""
        started = time.perf_counter()
        try:
            msg = self.decode(envelope.message)
            rgb = frame_from_message(msg)
        except ValueError as exc:
            self.reject(str(exc), settings)
            return None
        frame = CameraFrame(self.name, msg.header, rgb, envelope.clock, started)
        problems = header_problems(frame.stamp, msg.header.frame_id, envelope.clock, settings.stamp_tolerance)
        self.stats.on_header("; ".join(problems.values()))
        self.reports.update(self.name, {kind: problems.get(kind) and f"implausible header: {problems[kind]}"
                                        for kind in HEADER_PROBLEMS})
        self.latest = rgb
        frame.depth = self._pair_depth(frame.stamp_ns, settings.depth_stamp_tolerance)
        return frame

    def locate(self, frame: CameraFrame, settings: Any) -> CameraFrame:
        """The locate stage: every result's centroid, bearing and position (`frame.located`),
        with the depth image paired with the frame (it may have come in during the step);
        depth no later frame can pair with is forgotten."""
        data = frame.depth
        if data is None:
            data = self._pair_depth(frame.stamp_ns, settings.depth_stamp_tolerance)
        if self._depth is not None:
            self._depth.forget_before(frame.stamp_ns - int(round(settings.depth_stamp_tolerance * 1e9)))
        depth, problem = None, None
        if data is not None:
            try:
                depth = depth_from_message(self.decode_depth(data))
            except ValueError as exc:
                problem = str(exc)
        notes: Notes = {}
        frame.located = self._locate(frame.results, frame.rgb, settings, notes, depth, problem)
        self.reports.update(self.name, notes)
        return frame

    def publish(self, frame: CameraFrame, settings: Any) -> None:
        """The publish stage: results of earlier frames completed on this one, then the
        frame's own results; its statistics and the engine's events of the frame (status
        topic)."""
        notes: Notes = {}
        if frame.result is not None:
            self._publish_late(frame.result, frame.header, frame.rgb, settings, notes)
        results = frame.results
        label = label_image(results, frame.rgb.shape[0], frame.rgb.shape[1])
        notes["label_range"] = (f"target id(s) {', '.join(map(str, label.unpainted))} exceed 65535: not in the "
                                f"label image (their own masks travel with object_masks: true)"
                                if label.unpainted else None)
        drawn = self._publish(frame.header, frame.rgb, results, label, frame.located, settings, notes)
        self.reports.update(self.name, notes)
        overhead = time.perf_counter() - frame.started - frame.step_seconds
        latency = plausible_latency(frame.stamp, frame.received, self._clock.now().nanoseconds * 1e-9,
                                    settings.stamp_tolerance)
        self.stats.on_processed(latency, frame.step_seconds, overhead, drawn)
        for event in frame.result.events if frame.result is not None else ():
            self.reports.say(f"camera {self.name}: {event}")

    def reject(self, reason: str, settings: Any) -> None:
        """Count a rejected frame and say why, without repeating the same words too often."""
        self.stats.on_rejected(reason)
        self.reports.rejected(self.name, reason, settings.status_repeat_period)

    # ================================================================== helpers
    def decode(self, data: bytes) -> Image | CompressedImage:
        """The camera message from its CDR bytes.

        Raises:
            ValueError: the bytes are not a message of this camera's type.
        """
        try:
            return deserialize_message(data, self.message_type)
        except Exception as exc:  # rclpy raises a bare RuntimeError/TypeError on bad CDR
            raise ValueError(f"could not deserialize a {self.message_type.__name__} "
                             f"({len(data)} bytes): {exc}") from None

    @staticmethod
    def decode_depth(data: bytes) -> Image:
        """A depth Image from its CDR bytes.

        Raises:
            ValueError: the bytes are not an Image.
        """
        try:
            return deserialize_message(data, Image)
        except Exception as exc:  # rclpy raises a bare RuntimeError/TypeError on bad CDR
            raise ValueError(f"could not deserialize a depth Image ({len(data)} bytes): {exc}") from None

    def _pair_depth(self, stamp_ns: int, tolerance_s: float) -> Optional[bytes]:
        """The serialized depth Image whose stamp is closest to `stamp_ns` within the
        tolerance (seconds), or None (no depth topic, or none close enough)."""
        buffer = self._depth
        if buffer is None:
            return None
        found = buffer.closest(stamp_ns, int(round(tolerance_s * 1e9)))
        return None if found is None else found[1]

    def _locate(self, results: Sequence[TargetResult], rgb: np.ndarray, settings: Any, notes: Notes,
                depth: Optional[np.ndarray] = None, depth_problem: Optional[str] = None) -> list[TargetGeometry]:
        """The locator's geometry of `results` on the frame `rgb`; its notes join `notes`."""
        located, found = self.locator.locate(results, rgb.shape[0], rgb.shape[1], depth, settings.depth_percentile,
                                             settings.depth_min_range, settings.depth_max_range, depth_problem)
        notes.update(found)
        return located

    def _publish_late(self, result: StepResult, header: Header, rgb: np.ndarray, settings: Any,
                      notes: Notes) -> None:
        """Results of earlier frames (a clip-mode caption target: its clip completed on
        this frame) go out as extra messages with those frames' headers; the frame's own
        messages carry the other targets. Frames are kept for this only in clip mode."""
        history = self._history
        if settings.text_mode == "clip":
            history[result.frame_index] = (header, rgb)
            for old in [i for i in history if i <= result.frame_index - settings.text_window]:
                del history[old]
        by_frame: dict[int, list] = {}
        for index, _, late in result.late:
            by_frame.setdefault(index, []).append(late)
        for index, results in sorted(by_frame.items()):
            if index not in history:
                continue
            then, old_rgb = history[index]
            label = label_image(results, old_rgb.shape[0], old_rgb.shape[1])
            located = self._locate(results, old_rgb, settings, notes)
            self._publish(then, old_rgb, results, label, located, settings, notes)

    def _publish(self, header: Header, rgb: np.ndarray, results: Sequence[TargetResult], label: LabelImage,
                 located: Sequence[TargetGeometry], settings: Any, notes: Notes) -> bool:
        """Every output of one frame's results; True if the overlay was drawn. A problem
        with the standard outputs joins `notes`."""
        drawn, notes["tf_frame"] = self.publishers.publish(
            header, rgb, results, label, located, self.locator.intrinsics, settings.overlay_alpha,
            settings.object_masks, settings)
        return drawn
