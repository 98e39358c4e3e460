"""Which detection becomes a target's box prompt, and which one continues a track.

Boxes are (x0, y0, x1, y1) floats in frame pixels with continuous corners (a box over
a whole W x H frame is (0, 0, W, H)), as `Detection.box` and the engine's `BoxPrompt`.

The rules:

- **threshold**: a detection is eligible when its score is at or above the threshold;
  with none eligible there is no box: the target stays `acquiring` with no mask. No box
  is ever made up (in particular never a full-frame one).
- **degenerate boxes** are never eligible: a box whose width or height inside the frame
  is under `min_side` pixels (default 1: zero-area and off-frame boxes), and a box that
  covers `max_area_fraction` (default 0.95) or more of the frame's area, which says
  "the whole image" rather than an object (detectors answer that way to a caption that
  names the scene, or nothing in it), and which SAM2 would turn into a mask of the scene.
- **stable ids** on re-grounding a tracked target: the best eligible detection replaces
  the target's box only when it is the one that continues the track, i.e. among the
  eligible detections the one overlapping the tracked box most, with IoU at least
  `min_iou` (`continues_track`). Otherwise the target keeps its id and its track, and
  nothing is prompted.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from .detection import Detection

DEFAULT_MIN_SIDE = 1.0  # pixels
DEFAULT_MAX_AREA_FRACTION = 0.95  # of the frame's area


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (pixels, continuous corners).

    In [0, 1]; 0 when either box has no area (x1 <= x0 or y1 <= y0) or they do not meet.
    """
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    area_a = max(ax1 - ax0, 0.0) * max(ay1 - ay0, 0.0)
    area_b = max(bx1 - bx0, 0.0) * max(by1 - by0, 0.0)
    inter = max(min(ax1, bx1) - max(ax0, bx0), 0.0) * max(min(ay1, by1) - max(ay0, by0), 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0.0 else 0.0


def degenerate_reason(box: Sequence[float], frame_size: tuple[int, int], *,
                      min_side: float = DEFAULT_MIN_SIDE,
                      max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION) -> Optional[str]:
    """Why `box` cannot be a box prompt on a frame of `frame_size` (height, width) pixels,
    or None when it can (see the module's rules). The box is measured clipped to the
    frame. Raises ValueError for a frame size that is not two positive numbers.
    """
    height, width = (float(v) for v in frame_size)
    if not (height > 0 and width > 0):
        raise ValueError(f"frame_size must be (height, width) > 0, got {frame_size}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return f"box {tuple(box)} is not finite"
    w = min(x1, width) - max(x0, 0.0)
    h = min(y1, height) - max(y0, 0.0)
    if w < min_side or h < min_side:
        return (f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) spans {max(w, 0.0):g}x{max(h, 0.0):g} pixels of the "
                f"{width:g}x{height:g} frame, under {min_side:g} pixel(s) a side")
    fraction = (w * h) / (width * height)
    if fraction >= max_area_fraction:
        return (f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) covers {fraction:.0%} of the {width:g}x{height:g} "
                f"frame (at most {max_area_fraction:.0%} is an object)")
    return None


def eligible(detections: Sequence[Detection], threshold: float, *,
             frame_size: Optional[tuple[int, int]] = None, min_side: float = DEFAULT_MIN_SIDE,
             max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION) -> list[int]:
    """Indices into `detections` of those that may become a box prompt, best score first.

    A detection is eligible when its score is >= `threshold` and its box is not
    degenerate on the frame (`frame_size` (height, width) pixels; when None, each
    detection's own `frame_size`). Raises ValueError when the frame size is known
    neither way (a full-frame box could not be told apart).
    """
    ranked = sorted(range(len(detections)), key=lambda i: -detections[i].score)
    chosen = []
    for i in ranked:
        det = detections[i]
        if not det.score >= threshold:
            continue
        size = frame_size if frame_size is not None else det.frame_size
        if size is None:
            raise ValueError(f"detection {det} has no frame_size: pass frame_size=(height, width) to tell "
                             "full-frame boxes apart")
        if degenerate_reason(det.box, size, min_side=min_side, max_area_fraction=max_area_fraction) is None:
            chosen.append(i)
    return chosen


def best_box(detections: Sequence[Detection], threshold: float, *,
             frame_size: Optional[tuple[int, int]] = None, min_side: float = DEFAULT_MIN_SIDE,
             max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION) -> Optional[Detection]:
    """The highest-scoring eligible detection (score >= `threshold`, box not degenerate;
    see `eligible`), or None when there is none: then the target has no box (it stays
    `acquiring`); nothing else is put in its place. Raises ValueError as `eligible`.
    """
    chosen = eligible(detections, threshold, frame_size=frame_size, min_side=min_side,
                      max_area_fraction=max_area_fraction)
    return detections[chosen[0]] if chosen else None


def match_to_track(detections: Sequence[Detection], tracked_box: Sequence[float], min_iou: float) -> Optional[int]:
    """The index of the detection that continues a track: the one whose box overlaps
    `tracked_box` (x0, y0, x1, y1 pixels) most, if that IoU is >= `min_iou`; ties go to
    the higher score, then to the earlier one. None when no detection overlaps enough.
    """
    best: Optional[int] = None
    best_key = (-1.0, -math.inf)
    for i, det in enumerate(detections):
        iou = box_iou(det.box, tracked_box)
        if iou >= min_iou and (iou, det.score) > best_key:
            best, best_key = i, (iou, det.score)
    return best


def continues_track(detections: Sequence[Detection], tracked_box: Sequence[float], threshold: float,
                    min_iou: float, *, frame_size: Optional[tuple[int, int]] = None,
                    min_side: float = DEFAULT_MIN_SIDE,
                    max_area_fraction: float = DEFAULT_MAX_AREA_FRACTION) -> Optional[Detection]:
    """The new box for a tracked target on re-grounding, or None to keep the track as is.

    The best eligible detection (`best_box`) is returned only when it is also the
    eligible detection that continues the track (`match_to_track` over the eligible
    ones, IoU with `tracked_box` >= `min_iou`): the target then keeps its id with a
    fresher box. None when nothing is eligible, when the best box lies elsewhere (the
    caption's best match is another object, or the track drifted: either way the id
    must not jump), or when it overlaps the track less than another eligible box does.
    Raises ValueError as `eligible`.
    """
    chosen = eligible(detections, threshold, frame_size=frame_size, min_side=min_side,
                      max_area_fraction=max_area_fraction)
    if not chosen:
        return None
    candidates = [detections[i] for i in chosen]
    if match_to_track(candidates, tracked_box, min_iou) != 0:  # 0: the best-scoring one
        return None
    return candidates[0]


__all__ = ["box_iou", "degenerate_reason", "eligible", "best_box", "match_to_track", "continues_track"]
