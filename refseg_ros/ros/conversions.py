"""Messages <-> numpy: camera frames in, label images and object lists out.

The pixel rules (encoding, row step, byte order) live in refseg_ros.imaging; this module
only unpacks and packs the message fields, so every ValueError it raises names what was
wrong with the message.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from .. import imaging
from ..engine import TargetResult, TargetState
from ..runtime.render import LabelImage
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
                    with_masks: bool = False) -> SegmentedObjectArray:
    """The object list that goes with `label` (same order, same values).

    `with_masks` also fills each object's own mask (mono8, 255 = object): the label
    image gives a pixel to one object only, so where masks overlap only these keep
    every object's full extent.
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
        objects.append(obj)
    out.objects = objects
    return out
