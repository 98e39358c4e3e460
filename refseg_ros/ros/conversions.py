"""Messages <-> numpy: camera frames in, label images and object lists out.

The pixel rules (encoding, row step, byte order) live in refseg_ros.imaging; this module
only unpacks and packs the message fields, so every ValueError it raises names what was
wrong with the message.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from geometry_msgs.msg import Point, PointStamped, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from .. import imaging
from ..engine import TargetResult, TargetState
from ..runtime import geometry
from ..runtime.render import LabelImage, color_of
from refseg_ros.msg import SegmentedObject, SegmentedObjectArray

STATES = {
    TargetState.ACQUIRING: SegmentedObject.STATE_ACQUIRING,
    TargetState.TRACKED: SegmentedObject.STATE_TRACKED,
    TargetState.OCCLUDED: SegmentedObject.STATE_OCCLUDED,
    TargetState.LOST: SegmentedObject.STATE_LOST,
}
MASK_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")


def image_array(msg: Image) -> np.ndarray:
    """The pixels of an Image in its own encoding (H x W or H x W x C)."""
    return imaging.image_to_array(msg.encoding, msg.height, msg.width, msg.step,
                                  msg.is_bigendian, memoryview(msg.data))


def frame_from_message(msg: Union[Image, CompressedImage]) -> np.ndarray:
    """A camera message as the engine's frame: H x W x 3 uint8 RGB.

    Raw and compressed messages of one picture give the same bytes (the same
    conversion, imaging.to_rgb8; see imaging.TRANSPORT_TABLE). Masks need no such
    rule: ReferenceTarget and AddTarget carry them as sensor_msgs/Image only.
    """
    if isinstance(msg, CompressedImage):
        return imaging.decode_compressed(msg.format, memoryview(msg.data))
    return imaging.to_rgb8(image_array(msg), msg.encoding)


def mask_from_message(msg: Image) -> np.ndarray:
    """A one-channel mask image as H x W bool (nonzero = object)."""
    if msg.encoding not in MASK_ENCODINGS:
        raise ValueError(f"mask encoding must be one of {', '.join(MASK_ENCODINGS)}, "
                         f"got {msg.encoding!r}")
    return image_array(msg) != 0


def image_message(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Pack an array into an Image with `header` and no row padding."""
    fields = imaging.array_to_image_fields(array, encoding)
    msg = Image(header=header)
    msg.height = fields["height"]
    msg.width = fields["width"]
    msg.encoding = fields["encoding"]
    msg.is_bigendian = fields["is_bigendian"]
    msg.step = fields["step"]
    msg.data = fields["data"]
    return msg


def objects_message(header: Header, results: Sequence[TargetResult], label: LabelImage,
                    with_masks: bool = False,
                    located: Optional[Sequence[geometry.TargetGeometry]] = None) -> SegmentedObjectArray:
    """The object list that goes with `label` (same order, same values).

    `with_masks` also fills each object's own mask (mono8, 255 = object): the label
    image gives a pixel to one object only, so where masks overlap only these keep
    every object's full extent. `located` (one per result) fills centroid, area,
    bearing and position, expressed in header.frame_id.
    """
    out = SegmentedObjectArray(header=header)
    objects = []
    height, width = label.labels.shape
    for result, value in zip(results, label.values):
        obj = SegmentedObject(target_id=int(result.target_id), label=result.label,
                              score=float(result.score), state=STATES[result.state],
                              mask_value=int(value))
        if with_masks:
            own = result.mask if result.mask is not None and result.mask.shape == (height, width) \
                else np.zeros((height, width), bool)
            obj.mask = image_message(np.where(own, np.uint8(255), np.uint8(0)), "mono8", header)
        if result.box is not None:
            x0, y0, x1, y1 = (int(v) for v in result.box)
            obj.bbox = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1,
                                        height=y1 - y0 + 1, do_rectify=False)
        if located is not None:
            fill_geometry(obj, located[len(objects)], header.frame_id)
        objects.append(obj)
    out.objects = objects
    return out


def fill_geometry(obj: SegmentedObject, where: geometry.TargetGeometry, frame_id: str) -> None:
    """Copy one target's geometry into its SegmentedObject (flags unset where unknown)."""
    obj.centroid_x, obj.centroid_y = float(where.centroid.u), float(where.centroid.v)
    obj.area = int(where.centroid.area)
    obj.frame_id = frame_id
    if where.bearing is not None:
        obj.has_bearing = True
        obj.bearing = Vector3(x=float(where.bearing[0]), y=float(where.bearing[1]), z=float(where.bearing[2]))
    if where.position is not None:
        obj.depth_pixels = int(where.position.valid_pixels)
        if where.position.point is not None:
            obj.has_position = True
            x, y, z = (float(v) for v in where.position.point)
            obj.position = Point(x=x, y=y, z=z)


def intrinsics_from_camera_info(msg: CameraInfo, rectified: bool = False) -> geometry.Intrinsics:
    """The camera model of a CameraInfo's images: K, D and distortion_model for raw
    images; P without distortion for rectified ones (`rectified`); with the size.

    Raises:
        ValueError: K (raw) or P (rectified) all zero (uncalibrated), not finite, or an
            unsupported distortion model.
    """
    if rectified:
        return geometry.Intrinsics.from_projection(list(msg.p), msg.width, msg.height)
    return geometry.Intrinsics.from_fields(list(msg.k), list(msg.d), msg.width, msg.height,
                                           msg.distortion_model)


def depth_from_message(msg: Image) -> np.ndarray:
    """An aligned depth Image (16UC1/mono16 millimetres, 32FC1 metres) as H x W float32
    metres, invalid pixels (0, NaN, inf) NaN.

    Raises:
        ValueError: another encoding, or fields that do not hold the image.
    """
    raw = geometry.depth_image_array(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian,
                                     memoryview(msg.data))
    return geometry.depth_to_metres(raw, msg.encoding)


def point_message(header: Header, point: Sequence[float]) -> PointStamped:
    """A target's position (x, y, z metres in header.frame_id) as a PointStamped."""
    x, y, z = (float(v) for v in point)
    return PointStamped(header=header, point=Point(x=x, y=y, z=z))


def markers_message(header: Header, results: Sequence[TargetResult],
                    located: Sequence[geometry.TargetGeometry], namespace: str = "refseg",
                    diameter: float = 0.1):
    """RViz markers: a sphere and a text label per located target, in header.frame_id.

    The array starts with a DELETEALL of `namespace`, so that targets no longer located
    disappear with the next array.
    """
    from visualization_msgs.msg import Marker, MarkerArray

    markers = [Marker(header=header, ns=namespace, action=Marker.DELETEALL)]
    for result, where in zip(results, located):
        if where.position is None or where.position.point is None:
            continue
        x, y, z = (float(v) for v in where.position.point)
        r, g, b = (c / 255.0 for c in color_of(result.target_id))
        sphere = Marker(header=header, ns=namespace, id=2 * int(result.target_id), type=Marker.SPHERE,
                        action=Marker.ADD)
        sphere.pose.position = Point(x=x, y=y, z=z)
        sphere.pose.orientation.w = 1.0
        sphere.scale = Vector3(x=diameter, y=diameter, z=diameter)
        sphere.color.r, sphere.color.g, sphere.color.b, sphere.color.a = r, g, b, 0.8
        text = Marker(header=header, ns=namespace, id=2 * int(result.target_id) + 1,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=x, y=y - diameter, z=z)  # above it: y points down
        text.pose.orientation.w = 1.0
        text.scale.z = diameter * 0.8
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f"{result.target_id} {result.label} {z:.2f} m".replace("  ", " ")
        markers += [sphere, text]
    return MarkerArray(markers=markers)
