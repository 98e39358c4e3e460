"""One camera's ROS side: its image subscription and its three result publishers.

The subscription takes camera messages *serialized* (CDR bytes, rclpy's ``raw=True``):
taking a message then costs one copy and no Python object per field, so a frame that a
newer one replaces before the model gets to it costs almost nothing; only the frame the
worker takes is deserialized (`decode`). bench/ros_load.py measures both ways.

Results go to <camera>/<output_namespace>/mask (label image), .../objects
(SegmentedObjectArray) and .../overlay (rgb8 picture), all stamped with the source
image's header. The overlay is drawn only while someone subscribes to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..engine import TargetResult
from ..runtime.render import LabelImage, overlay
from ..runtime.stats import CameraStats
from refseg_ros.msg import SegmentedObjectArray
from .conversions import image_message, objects_message


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
        for pub in (self.mask_pub, self.objects_pub, self.overlay_pub):
            if pub is not None:
                node.destroy_publisher(pub)
        self.subscription = self.mask_pub = self.objects_pub = self.overlay_pub = None

    def publish(self, header: Header, rgb: np.ndarray, results: Sequence[TargetResult],
                label: LabelImage, alpha: float, object_masks: bool = False) -> bool:
        """Publish mask and objects (with each object's own mask if asked), and the
        overlay if watched; True if it was drawn."""
        self.mask_pub.publish(image_message(label.labels, label.encoding, header))
        self.objects_pub.publish(objects_message(header, results, label, object_masks))
        if self.overlay_pub.get_subscription_count() == 0:
            return False
        self.overlay_pub.publish(image_message(overlay(rgb, results, label, alpha), "rgb8", header))
        return True
