"""Turn one frame's target results into a label image and an overlay picture.

Label image (mono16): 0 is background and every other value is a target id, so a
consumer holding only the image knows which target each pixel belongs to, and a target
keeps its value from frame to frame whatever other targets appear or vanish. Objects are
painted in list order, so where masks overlap the later object wins; an object whose
pixels are all covered by later ones (or that is not visible) gets value 0 in the list.
Ids above 65535 do not fit the image: such a target is not painted (value 0; its own mask
still travels with object_masks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..engine import TargetResult

#: The largest target id a label image holds (its pixels are uint16).
MAX_LABEL = 65535
LABEL_ENCODING = "mono16"


@dataclass
class LabelImage:
    """The painted label image and, per object, its value in it.

    labels: H x W uint16, 0 background, else the target id of the pixel's object.
    values: per object of the list, its target id if any of its pixels is in `labels`,
        else 0 (not visible, covered by later objects, or an id above MAX_LABEL).
    unpainted: ids of visible objects left out because they exceed MAX_LABEL.
    """

    labels: np.ndarray
    values: list[int]
    unpainted: list[int] = field(default_factory=list)

    @property
    def encoding(self) -> str:
        """The sensor_msgs/Image encoding of `labels` (always mono16)."""
        return LABEL_ENCODING


def _visible(result: TargetResult, height: int, width: int) -> bool:
    return result.mask is not None and result.box is not None and result.mask.shape == (height, width)


def label_image(results: Sequence[TargetResult], height: int, width: int) -> LabelImage:
    """Paint every visible result's mask with its target id (later results on top).

    Args:
        results: one frame's results, in the order of its object list.
        height, width: the frame's size in pixels; masks of another size are skipped.
    """
    labels = np.zeros((height, width), dtype=np.uint16)
    unpainted = []
    painted = False
    for result in results:
        if not _visible(result, height, width):
            continue
        tid = int(result.target_id)
        if not 0 < tid <= MAX_LABEL:
            unpainted.append(tid)
            continue
        labels[result.mask] = tid
        painted = True
    if not painted:
        return LabelImage(labels, [0] * len(results), unpainted)
    present = np.bincount(labels.ravel()).nonzero()[0]
    present = set(present[present > 0].tolist())
    return LabelImage(labels, [int(r.target_id) if int(r.target_id) in present else 0 for r in results],
                      unpainted)


def color_of(target_id: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per target id (golden-ratio hues)."""
    import colorsys

    hue = (target_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def overlay(rgb: np.ndarray, results: Sequence[TargetResult], label: Optional[LabelImage] = None,
            alpha: float = 0.5) -> np.ndarray:
    """The frame with each visible object's mask tinted, its box drawn and named."""
    import cv2

    if label is None:
        label = label_image(results, rgb.shape[0], rgb.shape[1])
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    out = rgb.copy()
    labels = label.labels
    painted = (labels > 0).view(np.uint8)
    if painted.any():
        # Colour every pixel by its label through a lookup table, blend the whole picture
        # once, and copy the blend where a mask is: OpenCV's vectorised paths, ~20x
        # faster than per-pixel float arithmetic on large masks.
        top = int(labels.max())
        table = np.zeros((max(256, top + 1), 3), dtype=np.uint8)
        for result in results:
            if 0 < int(result.target_id) <= top:
                table[int(result.target_id)] = color_of(result.target_id)
        if top <= 255:
            small = labels.astype(np.uint8)
            color = cv2.LUT(cv2.merge([small, small, small]), table[:256].reshape(256, 1, 3))
        else:
            color = table[labels]
        blended = cv2.addWeighted(rgb, 1.0 - alpha, color, alpha, 0.0)
        out = cv2.copyTo(blended, painted, out)
    for result in results:
        if result.box is None:
            continue
        color = color_of(result.target_id)
        x0, y0, x1, y1 = (int(v) for v in result.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, 2)
        text = f"{result.target_id} {result.label} {result.score:.2f}".replace("  ", " ")
        ty = y0 - 5 if y0 > 15 else y0 + 15
        cv2.putText(out, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    return out
