"""Teaching requests (service calls, reference and caption messages) -> TaughtTarget.

Each function either returns a complete target for the registry or raises TeachError
naming the field that was wrong, so the reply or status message can say it plainly.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from sensor_msgs.msg import Image

from ..runtime.registry import TeachError
from ..store import TaughtTarget
from .conversions import frame_from_message, mask_from_message

# camera -> its latest frame (H x W x 3 RGB), for prompts "on the camera's current frame"
LatestFrame = Callable[[str], Optional[np.ndarray]]


def given(image: Image) -> bool:
    """Whether an optional Image field was filled in at all."""
    return bool(image.height or image.width or image.encoding or len(image.data))


def decode_image(image: Image, what: str = "image") -> np.ndarray:
    try:
        return frame_from_message(image)
    except ValueError as exc:
        raise TeachError(f"{what}: {exc}") from None


def decode_mask(mask: Image, what: str = "mask") -> np.ndarray:
    try:
        return mask_from_message(mask)
    except ValueError as exc:
        raise TeachError(f"{what}: {exc}") from None


def from_reference(msg) -> TaughtTarget:
    """A refseg_ros/ReferenceTarget: image + mask + label (teach by example)."""
    if not given(msg.image):
        raise TeachError("reference has no image")
    if not given(msg.mask):
        raise TeachError("reference has no mask")
    image = decode_image(msg.image, "reference image")
    mask = decode_mask(msg.mask, "reference mask")
    return TaughtTarget(target_id=int(msg.target_id), label=msg.label, kind="reference",
                        camera=msg.camera, image=image, mask=mask)


def view_from_reference(msg) -> tuple[int, np.ndarray, np.ndarray]:
    """A ReferenceTarget with add_view: (target id, image, mask) of one more example."""
    if not msg.target_id:
        raise TeachError("add_view needs the target_id of the reference target to add to")
    target = from_reference(msg)
    return target.target_id, target.image, target.mask


def caption_text(data: bytes) -> str:
    """The text of a serialized std_msgs/String. Raises TeachError when it is not UTF-8
    (rclpy replaces invalid bytes with U+FFFD, which no caption needs) or not a String."""
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    try:
        text = deserialize_message(data, String).data
    except Exception as exc:  # a message of another type on the topic
        raise TeachError(f"caption could not be read as std_msgs/String ({type(exc).__name__}: {exc})") from None
    if "\ufffd" in text:
        raise TeachError(f"caption is not valid UTF-8 (undecodable bytes at character {text.index(chr(0xFFFD))})")
    return text


def from_caption(text: str) -> TaughtTarget:
    """A std_msgs/String caption; the label is the caption (shortened by the registry)."""
    return TaughtTarget(target_id=0, label="", kind="caption", caption=text)


def from_add_request(req, latest_frame: LatestFrame) -> TaughtTarget:
    """An AddTarget request: a caption, or one prompt on an image or the current frame."""
    prompts = [name for name, on in (("mask", given(req.mask)), ("box", len(req.box) > 0),
                                     ("points", len(req.points) > 0)) if on]
    if req.caption:
        if prompts or given(req.image):
            raise TeachError(f"give either a caption or an image prompt, not both "
                             f"(got a caption and {', '.join(prompts) or 'an image'})")
        target = from_caption(req.caption)
        target.label, target.camera, target.target_id = req.label, req.camera, int(req.target_id)
        return target
    if len(prompts) != 1:
        raise TeachError("give exactly one of: a caption, a mask, a box or points "
                         f"(got {', '.join(prompts) if prompts else 'none'})")
    kind = prompts[0]
    if given(req.image):
        image = decode_image(req.image)
    else:
        if not req.camera:
            raise TeachError(f"a {kind} without an image lies on a camera's current frame: "
                             "name the camera")
        image = latest_frame(req.camera)
        if image is None:
            raise TeachError(f"no frame received yet on camera {req.camera}; "
                             "send the image the prompt was drawn on")
    target = TaughtTarget(target_id=int(req.target_id), label=req.label, kind=kind, camera=req.camera, image=image)
    if kind == "mask":
        target.mask = decode_mask(req.mask)
        if given(req.image):
            target.kind = "reference"
    elif kind == "box":
        if len(req.box) != 4:
            raise TeachError(f"box must be 4 numbers x0, y0, x1, y1; got {len(req.box)}")
        target.box = tuple(float(v) for v in req.box)
    else:
        values = [float(v) for v in req.points]
        if len(values) % 2:
            raise TeachError(f"points must be x, y pairs; got {len(values)} numbers")
        points = list(zip(values[0::2], values[1::2]))
        labels = [int(v) for v in req.point_labels] or [1] * len(points)
        if len(labels) != len(points):
            raise TeachError(f"need one label per point: {len(points)} points, {len(labels)} labels")
        target.points, target.point_labels = points, labels
    return target
