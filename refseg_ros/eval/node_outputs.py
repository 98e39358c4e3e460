"""What the node answered for one frame, and how that becomes per-target masks.

The node publishes, per frame, a label image (mono16: 0 background, else the pixel's
target id) and the object list with the same stamp. The label image gives a pixel to
one object only (the later one where masks overlap), while the offline evaluation
scores each target's own mask; so the live evaluation runs the node with
``object_masks`` and uses each object's own mask when the node sent it, falling back to
the label image otherwise (a node started without ``object_masks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class NodeObject:
    """One entry of the node's object list."""

    target_id: int  # the node's id of the target
    mask_value: int  # its value in the label image; 0: not in the image
    score: float
    state: str  # acquiring | tracked | occluded | lost
    mask: Optional[np.ndarray] = None  # H x W bool, when the node sends object masks


@dataclass
class NodeOutput:
    """The label image and object list of one frame, matched by header stamp."""

    stamp_ns: int
    labels: np.ndarray  # H x W uint16: target ids, 0 background
    objects: list[NodeObject] = field(default_factory=list)
    received: float = 0.0  # time.monotonic() when the later of the two messages came in


def object_masks(out: NodeOutput) -> dict[int, np.ndarray]:
    """Node target id -> that target's mask on this frame (H x W bool).

    Raises ValueError when the two messages do not fit together (an object mask of
    another size, a mask value other than the object's target id), which would mean they
    are not one frame's answer.
    """
    shape = out.labels.shape
    masks: dict[int, np.ndarray] = {}
    for obj in out.objects:
        if obj.mask is not None:
            if obj.mask.shape != shape:
                raise ValueError(f"object {obj.target_id} at stamp {out.stamp_ns}: mask "
                                 f"{obj.mask.shape} but label image {shape}")
            masks[obj.target_id] = np.asarray(obj.mask, bool)
        elif obj.mask_value:
            if obj.mask_value != obj.target_id:
                raise ValueError(f"object {obj.target_id} at stamp {out.stamp_ns} has mask "
                                 f"value {obj.mask_value}, not its target id")
            masks[obj.target_id] = out.labels == obj.mask_value
        else:
            masks[obj.target_id] = np.zeros(shape, bool)
    return masks
