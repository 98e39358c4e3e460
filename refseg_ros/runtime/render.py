"""Turn one frame's target results into a label image and an overlay picture.

Label image: 0 is background and k is the k-th object of the frame's object list
(1-based), so a consumer pairs pixels and objects with no extra message. Objects are
painted in list order, so where masks overlap the later object wins; an object whose
pixels are all covered by later ones (or that is not visible) gets value 0 in the list.
uint8 holds up to 255 objects; beyond that the image is uint16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..engine import TargetResult

MAX_MONO8_OBJECTS = 255
MAX_OBJECTS = 65535


@dataclass
class LabelImage:
    """The painted label image and, per object, its value in it (0: not visible)."""

    labels: np.ndarray  # H x W uint8 or uint16
    values: list[int]

    @property
    def encoding(self) -> str:
        return "mono8" if self.labels.dtype == np.uint8 else "mono16"


def label_image(results: Sequence[TargetResult], height: int, width: int) -> LabelImage:
    """Paint every result's mask with its 1-based position in `results`."""
    n = len(results)
    if n > MAX_OBJECTS:
        raise ValueError(f"{n} objects do not fit a 16-bit label image (at most {MAX_OBJECTS})")
    dtype = np.uint8 if n <= MAX_MONO8_OBJECTS else np.uint16
    labels = np.zeros((height, width), dtype=dtype)
    painted = False
    for k, result in enumerate(results, start=1):
        mask = result.mask
        if mask is None or result.box is None or mask.shape != (height, width):
            continue
        labels[mask] = k
        painted = True
    if not painted:
        return LabelImage(labels, [0] * n)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    return LabelImage(labels, [k if counts[k] else 0 for k in range(1, n + 1)])


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
        table = np.zeros((max(256, len(results) + 1), 3), dtype=np.uint8)
        for k, result in enumerate(results, start=1):
            table[k] = color_of(result.target_id)
        if labels.dtype == np.uint8:
            color = cv2.LUT(cv2.merge([labels, labels, labels]), table[:256].reshape(256, 1, 3))
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
