"""One camera's ROS side: its image subscription and its three result publishers.

The subscription takes camera messages *serialized* (CDR bytes, rclpy's ``raw=True``):
taking a message then costs one copy and no Python object per field, so a frame that a
newer one replaces before the model gets to it costs almost nothing; only the frame the
worker takes is deserialized (`decode`). bench/ros_load.py measures both ways.

Results go to <camera>/<output_namespace>/mask (label image), .../objects
(SegmentedObjectArray) and .../overlay (rgb8 picture), all stamped with the source
image's header. The overlay is drawn only while someone subscribes to it.

Target geometry (optional, per camera): the camera's CameraInfo (typed subscription: small
and rare; the newest valid one is kept) and an aligned depth image stream. Depth arrives
serialized too: its callback reads only header.stamp from the CDR bytes and keeps the
bytes in a bounded buffer by stamp (refseg_ros.runtime.pairing); the worker deserializes
only the depth message it pairs with the frame it processed. Results: .../markers
(visualization_msgs/MarkerArray, only while subscribed) and .../target_<id>/point
(geometry_msgs/PointStamped) for the targets listed in point_targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..engine import TargetResult
from ..runtime.geometry import Intrinsics, TargetGeometry
from ..runtime.pairing import StampBuffer, cdr_header_stamp_ns
from ..runtime.render import LabelImage, overlay
from ..runtime.stats import CameraStats
from refseg_ros.msg import SegmentedObjectArray
from .conversions import image_message, markers_message, objects_message, point_message
from .rclpy_compat import SubscriptionEventCallbacks


def output_topic(camera: str, namespace: str, name: str) -> str:
    return "/".join(p for p in (camera.rstrip("/"), namespace.strip("/"), name) if p)


@dataclass
class CameraChannel:
    """Subscription and publishers of one camera, alive while the node is active."""

    name: str  # the camera's key: its image topic without a /compressed suffix
    topic: str
    transport: str  # raw | compressed
    stats: CameraStats = field(init=False)
    subscription: object = None
    mask_pub: object = None
    objects_pub: object = None
    overlay_pub: object = None
    info_topic: str = ""  # sensor_msgs/CameraInfo of this camera; "" none
    depth_topic: str = ""  # aligned depth Image; "" none
    intrinsics: Optional[Intrinsics] = None  # from the newest valid CameraInfo
    info_key: object = None  # the newest CameraInfo's calibration fields, to skip repeats
    depth_buffer: Optional[StampBuffer] = None
    info_sub: object = None
    depth_sub: object = None
    markers_pub: object = None
    point_pubs: dict = field(default_factory=dict)  # target id -> PointStamped publisher

    def __post_init__(self) -> None:
        self.stats = CameraStats(self.name)

    @property
    def message_type(self) -> type:
        return CompressedImage if self.transport == "compressed" else Image

    def open(self, node: Node, input_qos: QoSProfile, output_qos: QoSProfile, namespace: str,
             on_frame: Callable[["CameraChannel", bytes], None], group: CallbackGroup,
             events: SubscriptionEventCallbacks | None = None) -> None:
        """Create the publishers and the serialized image subscription.

        `on_frame(channel, data)` gets each message as CDR bytes; `events` receives the
        subscription's QoS events (incompatible QoS, lost messages).
        """
        self.mask_pub = node.create_publisher(Image, output_topic(self.name, namespace, "mask"), output_qos)
        self.objects_pub = node.create_publisher(
            SegmentedObjectArray, output_topic(self.name, namespace, "objects"), output_qos)
        self.overlay_pub = node.create_publisher(Image, output_topic(self.name, namespace, "overlay"), output_qos)
        self.subscription = node.create_subscription(
            self.message_type, self.topic, lambda data: on_frame(self, data), input_qos,
            callback_group=group, event_callbacks=events, raw=True)

    def open_geometry(self, node: Node, input_qos: QoSProfile, output_qos: QoSProfile, namespace: str,
                      on_camera_info: Callable[["CameraChannel", CameraInfo], None], group: CallbackGroup,
                      point_targets: Sequence[int] = (), depth_queue_size: int = 30) -> None:
        """The CameraInfo and depth subscriptions (where configured) and the marker and
        point publishers. CameraInfo and depth use the image subscriptions' QoS."""
        from geometry_msgs.msg import PointStamped
        from visualization_msgs.msg import MarkerArray

        self.intrinsics = self.info_key = None
        self.markers_pub = node.create_publisher(MarkerArray, output_topic(self.name, namespace, "markers"),
                                                 output_qos)
        self.point_pubs = {int(t): node.create_publisher(
            PointStamped, output_topic(self.name, namespace, f"target_{int(t)}/point"), output_qos)
            for t in point_targets}
        if self.info_topic:
            self.info_sub = node.create_subscription(CameraInfo, self.info_topic,
                                                     lambda msg: on_camera_info(self, msg), input_qos,
                                                     callback_group=group)
        if self.depth_topic:
            self.depth_buffer = StampBuffer(depth_queue_size)
            self.depth_sub = node.create_subscription(Image, self.depth_topic, self._on_depth, input_qos,
                                                      callback_group=group, raw=True)

    def _on_depth(self, data: bytes) -> None:
        buffer = self.depth_buffer  # read once: close() may drop it meanwhile
        if buffer is None:
            return
        try:
            stamp = cdr_header_stamp_ns(data)
        except ValueError:
            return  # too short to be an Image: pairing never finds it, the worker never sees it
        buffer.put(stamp, data)

    def pair_depth(self, stamp_ns: int, tolerance_s: float) -> Optional[bytes]:
        """The serialized depth Image whose stamp is closest to `stamp_ns` within the
        tolerance (seconds), or None (no depth topic, or none close enough)."""
        buffer = self.depth_buffer
        if buffer is None:
            return None
        tolerance = int(round(tolerance_s * 1e9))
        found = buffer.closest(stamp_ns, tolerance)
        return None if found is None else found[1]

    def forget_depth_before(self, stamp_ns: int, tolerance_s: float) -> None:
        """Drop depth that no frame after the one stamped `stamp_ns` can pair with."""
        buffer = self.depth_buffer
        if buffer is not None:
            buffer.forget_before(stamp_ns - int(round(tolerance_s * 1e9)))

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

    def publisher_count(self, node: Node) -> int:
        """Publishers on the camera topic in the ROS graph, matched or not (a publisher with
        incompatible QoS counts too: it is there, its frames just never arrive)."""
        return node.count_publishers(self.topic)

    def close(self, node: Node) -> None:
        if self.subscription is not None:
            node.destroy_subscription(self.subscription)
        for sub in (self.info_sub, self.depth_sub):
            if sub is not None:
                node.destroy_subscription(sub)
        for pub in (self.mask_pub, self.objects_pub, self.overlay_pub, self.markers_pub, *self.point_pubs.values()):
            if pub is not None:
                node.destroy_publisher(pub)
        self.subscription = self.mask_pub = self.objects_pub = self.overlay_pub = None
        self.info_sub = self.depth_sub = self.markers_pub = self.depth_buffer = self.intrinsics = self.info_key = None
        self.point_pubs = {}

    def publish(self, header: Header, rgb: np.ndarray, results: Sequence[TargetResult],
                label: LabelImage, alpha: float, object_masks: bool = False,
                located: Optional[Sequence[TargetGeometry]] = None) -> bool:
        """Publish mask and objects (with each object's own mask if asked, and each one's
        geometry when `located` is given), markers if watched, points of the listed
        targets, and the overlay if watched; True if the overlay was drawn."""
        self.mask_pub.publish(image_message(label.labels, label.encoding, header))
        self.objects_pub.publish(objects_message(header, results, label, object_masks, located))
        if located is not None:
            self.publish_geometry(header, results, located)
        if self.overlay_pub.get_subscription_count() == 0:
            return False
        self.overlay_pub.publish(image_message(overlay(rgb, results, label, alpha), "rgb8", header))
        return True

    def publish_geometry(self, header: Header, results: Sequence[TargetResult],
                         located: Sequence[TargetGeometry]) -> None:
        """Markers (while someone subscribes) and the listed targets' points."""
        if self.markers_pub is not None and self.markers_pub.get_subscription_count() > 0:
            self.markers_pub.publish(markers_message(header, results, located))
        for result, where in zip(results, located):
            pub = self.point_pubs.get(int(result.target_id))
            if pub is not None and where.position is not None and where.position.point is not None:
                pub.publish(point_message(header, where.position.point))
