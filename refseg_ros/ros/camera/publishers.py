"""One camera's result publishers: everything published about one of its frames.

Results go to <camera>/<output_namespace>/mask (label image), .../objects
(SegmentedObjectArray) and .../overlay (rgb8 picture), all stamped with the source image's
header; the overlay is drawn only while someone subscribes to it. With target geometry:
.../markers (visualization_msgs/MarkerArray, only while subscribed) and
.../target_<id>/point (geometry_msgs/PointStamped) for the targets listed in
point_targets. The standard outputs (vision_msgs detections, /tf; ros/standard_outputs.py)
are shared by the node's cameras and published from here too.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ...engine import TargetResult
from ...runtime.geometry import TargetGeometry
from ...runtime.render import LabelImage, overlay
from refseg_ros.msg import SegmentedObjectArray
from ..conversions import image_message, markers_message, objects_message, point_message
from ..standard_outputs import OutputSwitches, StandardOutputs


def output_topic(camera: str, namespace: str, name: str) -> str:
    """The topic `<camera>/<namespace>/<name>` (empty parts left out, no double slashes)."""
    return "/".join(p for p in (camera.rstrip("/"), namespace.strip("/"), name) if p)


class CameraPublishers:
    """The publishers of one camera's results, alive while the node is active."""

    def __init__(self, node: Node, camera: str, namespace: str, output_qos: QoSProfile,
                 point_targets: Sequence[int] = (), outputs: Optional[StandardOutputs] = None):
        """Create the publishers of `camera`'s results under `namespace` (output_namespace);
        `outputs`: the node's standard outputs, None for none."""
        from geometry_msgs.msg import PointStamped
        from visualization_msgs.msg import MarkerArray

        self.node, self.camera, self.outputs = node, camera, outputs
        self.mask = node.create_publisher(Image, output_topic(camera, namespace, "mask"), output_qos)
        self.objects = node.create_publisher(SegmentedObjectArray, output_topic(camera, namespace, "objects"),
                                             output_qos)
        self.overlay = node.create_publisher(Image, output_topic(camera, namespace, "overlay"), output_qos)
        self.markers = node.create_publisher(MarkerArray, output_topic(camera, namespace, "markers"), output_qos)
        self.points = {int(t): node.create_publisher(
            PointStamped, output_topic(camera, namespace, f"target_{int(t)}/point"), output_qos)
            for t in point_targets}

    def publish(self, header: Header, rgb: np.ndarray, results: Sequence[TargetResult], label: LabelImage,
                located: Sequence[TargetGeometry], intrinsics: Any, alpha: float, object_masks: bool,
                switches: OutputSwitches) -> tuple[bool, Optional[str]]:
        """Publish one frame's results: mask and objects (with each object's own mask if
        `object_masks`, and each one's geometry `located`), markers if watched, points of
        the listed targets, the overlay (`rgb`: H x W x 3 uint8, blended with `alpha`) if
        watched, and the standard outputs switched on (`intrinsics`: the camera's, for the
        3D detections' extent, or None).

        Returns:
            whether the overlay was drawn, and a problem with the standard outputs to report
            (or None).
        """
        self.mask.publish(image_message(label.labels, label.encoding, header))
        self.objects.publish(objects_message(header, results, label, object_masks, located))
        if self.markers.get_subscription_count() > 0:
            self.markers.publish(markers_message(header, results, located))
        for result, where in zip(results, located):
            pub = self.points.get(int(result.target_id))
            if pub is not None and where.position is not None and where.position.point is not None:
                pub.publish(point_message(header, where.position.point))
        drawn = self.overlay.get_subscription_count() > 0
        if drawn:
            self.overlay.publish(image_message(overlay(rgb, results, label, alpha), "rgb8", header))
        problem = None
        if self.outputs is not None:
            problem = self.outputs.publish(self.camera, header, results, located, intrinsics, switches)
        return drawn, problem

    def close(self) -> None:
        """Destroy every publisher."""
        for pub in (self.mask, self.objects, self.overlay, self.markers, *self.points.values()):
            self.node.destroy_publisher(pub)
        self.points = {}
