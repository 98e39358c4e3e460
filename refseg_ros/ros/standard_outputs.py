"""Results in the messages the rest of a robot stack already reads.

- vision_msgs: per camera, a ``Detection2DArray`` on ``<camera>/<output_namespace>/detections``
  (one detection per visible target: id = target id, one hypothesis with class_id = label
  and score, the box in pixels) and a ``Detection3DArray`` on ``.../detections_3d`` (one
  per target with a 3D position: the box centred on the position, its width and height the
  mask's box seen at the position's depth, its depth extent 0), both with the frame's header.
- TF: per target with a 3D position, a ``geometry_msgs/TransformStamped`` from the frame's
  ``header.frame_id`` (the camera's optical frame) to ``<tf_frame_prefix>target_<id>``
  (translation = position, identity rotation), stamped with the frame's stamp, on ``/tf``
  as ``tf2_msgs/TFMessage``.

vision_msgs and tf2_msgs come with every ROS 2 distribution but not with the PyPI wheels:
each is imported when the outputs open, and when one is missing its outputs are off with
one line saying why. Every supported distribution (Humble to Rolling) has vision_msgs 4.x:
``BoundingBox2D.center`` is a ``vision_msgs/Pose2D`` whose ``position`` holds x and y; the
3.x layout (Galactic: ``center`` a ``geometry_msgs/Pose2D`` with x and y) is filled too.
Older layouts (2.x: no ``Detection2D.id``) are refused with the reason.

The message-building functions take the message classes as arguments and need no rclpy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Optional, Sequence

import numpy as np

from ..engine import TargetResult
from ..runtime import geometry

DETECTIONS, DETECTIONS_3D = "detections", "detections_3d"
TF_TOPIC = "/tf"


# ------------------------------------------------------------------------- messages
def vision_msgs_layout(msg: ModuleType) -> str:
    """Which vision_msgs field layout `msg` (a ``vision_msgs.msg`` module) has.

    Returns:
        "4.x" (BoundingBox2D.center.position.x) or "3.x" (BoundingBox2D.center.x).
    Raises:
        ValueError: a layout these outputs cannot fill (before 3.0: no Detection2D.id or
            ObjectHypothesisWithPose.hypothesis), naming what is missing.
    """
    missing = [name for obj, field, name in (
        (msg.Detection2D(), "id", "Detection2D.id"),
        (msg.ObjectHypothesisWithPose(), "hypothesis", "ObjectHypothesisWithPose.hypothesis"),
        (msg.Detection3D(), "id", "Detection3D.id")) if not hasattr(obj, field)]
    if missing:
        raise ValueError(f"vision_msgs has a layout older than 3.0 (no {', '.join(missing)}); "
                         f"ROS 2 Humble and later have 4.x")
    return "4.x" if hasattr(msg.BoundingBox2D().center, "position") else "3.x"


def _hypothesis(msg: ModuleType, result: TargetResult) -> Any:
    out = msg.ObjectHypothesisWithPose()
    out.hypothesis.class_id = result.label
    out.hypothesis.score = float(result.score)
    return out


def detection_2d_array(msg: ModuleType, header: Any, results: Sequence[TargetResult]) -> Any:
    """A ``Detection2DArray`` of the visible results (those with a box).

    Each detection: header = `header`, id = str(target_id), results = one hypothesis
    (class_id = label, score = presence probability), bbox centred on the box's centre in
    pixels (pixel centres at integer coordinates, as CameraInfo's K), size the box's width
    and height in pixels (x1 - x0 + 1), theta 0.
    """
    out = msg.Detection2DArray(header=header)
    detections = []
    for result in results:
        if result.box is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in result.box)
        det = msg.Detection2D(header=header, id=str(int(result.target_id)))
        det.results = [_hypothesis(msg, result)]
        center = det.bbox.center
        point = center.position if hasattr(center, "position") else center  # 4.x or 3.x
        point.x, point.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        det.bbox.size_x, det.bbox.size_y = x1 - x0 + 1.0, y1 - y0 + 1.0
        detections.append(det)
    out.detections = detections
    return out


def box_extent(intrinsics: Optional[geometry.Intrinsics], box: Sequence[int], depth: float) -> tuple[float, float]:
    """Width and height in metres of a pixel box seen at `depth` (z, metres).

    The box's outer edges (half a pixel beyond its first and last pixels) through its
    centre, undistorted with the camera model, scaled to the depth; (0, 0) without
    intrinsics.
    """
    if intrinsics is None:
        return 0.0, 0.0
    x0, y0, x1, y1 = (float(v) for v in box)
    cu, cv = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    edges = geometry.undistort_points(intrinsics, np.array(
        [[x0 - 0.5, cv], [x1 + 0.5, cv], [cu, y0 - 0.5], [cu, y1 + 0.5]]))
    return float(abs(edges[1, 0] - edges[0, 0]) * depth), float(abs(edges[3, 1] - edges[2, 1]) * depth)


def _position(where: geometry.TargetGeometry) -> Optional[np.ndarray]:
    return None if where.position is None else where.position.point


def detection_3d_array(msg: ModuleType, header: Any, results: Sequence[TargetResult],
                       located: Sequence[geometry.TargetGeometry],
                       intrinsics: Optional[geometry.Intrinsics]) -> Any:
    """A ``Detection3DArray`` of the results with a 3D position, in header.frame_id.

    Each detection: id = str(target_id), one hypothesis (class_id = label, score, pose =
    the position), bbox centred on the position (identity orientation), size x and y the
    box's extent at the position's depth (`box_extent`), size z 0 (a camera sees no
    depth extent).
    """
    out = msg.Detection3DArray(header=header)
    detections = []
    for result, where in zip(results, located):
        point = _position(where)
        if point is None or result.box is None:
            continue
        x, y, z = (float(v) for v in point)
        det = msg.Detection3D(header=header, id=str(int(result.target_id)))
        hypothesis = _hypothesis(msg, result)
        pose = hypothesis.pose.pose
        pose.position.x, pose.position.y, pose.position.z = x, y, z
        pose.orientation.w = 1.0
        det.results = [hypothesis]
        center = det.bbox.center
        center.position.x, center.position.y, center.position.z = x, y, z
        center.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y = box_extent(intrinsics, result.box, z)
        det.bbox.size.z = 0.0
        detections.append(det)
    out.detections = detections
    return out


def target_frame(prefix: str, target_id: int) -> str:
    """The TF frame of a target: ``<prefix>target_<id>`` (e.g. refseg/target_3)."""
    return f"{prefix}target_{int(target_id)}"


def target_transforms(header: Any, results: Sequence[TargetResult], located: Sequence[geometry.TargetGeometry],
                      prefix: str) -> list:
    """One ``TransformStamped`` per result with a 3D position: header.frame_id ->
    target_frame(prefix, id), translation = position (metres), identity rotation, stamped
    with header.stamp."""
    from geometry_msgs.msg import TransformStamped

    out = []
    for result, where in zip(results, located):
        point = _position(where)
        if point is None:
            continue
        t = TransformStamped(header=header, child_frame_id=target_frame(prefix, result.target_id))
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in point)
        t.transform.rotation.w = 1.0
        out.append(t)
    return out


def import_messages(package: str) -> tuple[Optional[ModuleType], str]:
    """``<package>.msg`` if it imports, else None; and why not (the import error)."""
    try:
        return importlib.import_module(f"{package}.msg"), ""
    except Exception as exc:  # ImportError, or a broken type support
        return None, f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------- publishing
@dataclass
class OutputSwitches:
    """The parameters these outputs follow (read on every frame, so they may change live)."""

    publish_detections: bool = True
    publish_tf: bool = True
    tf_frame_prefix: str = "refseg/"

    def check(self) -> None:
        """Refuse a prefix TF cannot take (leading '/', whitespace), naming the parameter.

        Raises:
            ValueError: the prefix is not a valid start of a TF frame id.
        """
        if self.tf_frame_prefix.startswith("/") or any(c.isspace() for c in self.tf_frame_prefix):
            raise ValueError(f"parameter tf_frame_prefix must not start with '/' nor hold whitespace "
                             f"(TF frame ids), got {self.tf_frame_prefix!r}")


class StandardOutputs:
    """The node's vision_msgs publishers (per camera) and its /tf publisher.

    Publishers are made when the outputs open, or on the first frame after a switch turned
    them on; a switched-off output publishes nothing.
    """

    def __init__(self, node: Any, topics: dict[str, str], output_qos: Any,
                 vision_msgs: Optional[ModuleType] = None, tf2_msgs: Optional[ModuleType] = None):
        """`topics`: camera key -> its output prefix (``<camera>/<output_namespace>``)."""
        self.node, self.topics, self.output_qos = node, topics, output_qos
        self.vision_msgs, self.tf2_msgs = vision_msgs, tf2_msgs
        self._detections: dict[str, tuple[Any, Any]] = {}
        self._tf_pub = None

    @classmethod
    def open(cls, node: Any, topics: dict[str, str], output_qos: Any,
             switches: OutputSwitches) -> tuple["StandardOutputs", list[tuple[str, bool]]]:
        """Import vision_msgs and tf2_msgs and make the publishers that are switched on.

        Returns:
            the outputs, and lines to log and put on the status topic: (text, is_warning);
            a missing package is an optional output left out, a note (not a warning, like
            the other optional parts' notes) that names what is off and how to get it; a
            package of a layout this code cannot fill is a warning.
        """
        notes = []
        vision, why = import_messages("vision_msgs")
        where = ", ".join(f"{t}/{DETECTIONS}[_3d]" for t in topics.values())
        if vision is None:
            notes.append((f"vision_msgs is not importable ({why}): no Detection2DArray/Detection3DArray on "
                          f"{where}; install ros-<distro>-vision-msgs (or set publish_detections: false)", False))
        else:
            try:
                layout = vision_msgs_layout(vision)
                notes.append((f"vision_msgs {layout}: detections on {where}"
                              + ("" if switches.publish_detections else " (off: publish_detections false)"), False))
            except ValueError as exc:
                vision = None
                notes.append((f"{exc}: no detections", True))
        tf2, why = import_messages("tf2_msgs")
        if tf2 is None:
            notes.append((f"tf2_msgs is not importable ({why}): no TF frames of targets on {TF_TOPIC}; "
                          f"install ros-<distro>-tf2-msgs (or set publish_tf: false)", False))
        else:
            notes.append((f"TF frames of located targets: <optical frame> -> "
                          f"{switches.tf_frame_prefix}target_<id> on {TF_TOPIC}"
                          + ("" if switches.publish_tf else " (off: publish_tf false)"), False))
        outputs = cls(node, topics, output_qos, vision, tf2)
        for camera in topics:
            outputs._publishers(camera, switches)
        return outputs, notes

    def _publishers(self, camera: str, switches: OutputSwitches) -> tuple[Optional[tuple], Any]:
        detections = None
        if switches.publish_detections and self.vision_msgs is not None:
            detections = self._detections.get(camera)
            if detections is None:
                base = self.topics[camera]
                detections = self._detections[camera] = (
                    self.node.create_publisher(self.vision_msgs.Detection2DArray, f"{base}/{DETECTIONS}",
                                               self.output_qos),
                    self.node.create_publisher(self.vision_msgs.Detection3DArray, f"{base}/{DETECTIONS_3D}",
                                               self.output_qos))
        tf_pub = None
        if switches.publish_tf and self.tf2_msgs is not None:
            if self._tf_pub is None:
                from rclpy.qos import QoSProfile, ReliabilityPolicy

                # as tf2_ros's TransformBroadcaster: reliable, volatile, depth 100
                self._tf_pub = self.node.create_publisher(
                    self.tf2_msgs.TFMessage, TF_TOPIC, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
            tf_pub = self._tf_pub
        return detections, tf_pub

    def publish(self, camera: str, header: Any, results: Sequence[TargetResult],
                located: Optional[Sequence[geometry.TargetGeometry]], intrinsics: Optional[geometry.Intrinsics],
                switches: OutputSwitches) -> Optional[str]:
        """Publish one frame's detections and target transforms (those switched on).

        Returns:
            a problem to report, or None: TF frames need the image's header.frame_id.
        """
        detections, tf_pub = self._publishers(camera, switches)
        located = located if located is not None else [geometry.EMPTY] * len(results)
        if detections is not None:
            detections[0].publish(detection_2d_array(self.vision_msgs, header, results))
            detections[1].publish(detection_3d_array(self.vision_msgs, header, results, located, intrinsics))
        if tf_pub is None:
            return None
        transforms = target_transforms(header, results, located, switches.tf_frame_prefix)
        if not transforms:
            return None
        if not header.frame_id:
            return "frames have an empty header.frame_id: no TF frames of targets (set the camera's frame id)"
        tf_pub.publish(self.tf2_msgs.TFMessage(transforms=transforms))
        return None

    def close(self) -> None:
        """Destroy every publisher."""
        pubs = [p for pair in self._detections.values() for p in pair] + [self._tf_pub]
        for pub in pubs:
            if pub is not None:
                self.node.destroy_publisher(pub)
        self._detections, self._tf_pub = {}, None
