"""Plain data exchanged with the engine: prompts in, per-target results out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np


class TargetState(str, enum.Enum):
    """Where a target stands on the latest frame."""

    ACQUIRING = "acquiring"  # taught, not yet seen in this stream
    TRACKED = "tracked"  # visible on this frame
    OCCLUDED = "occluded"  # missing for a few frames; memory kept
    LOST = "lost"  # missing for longer than the occlusion patience


@dataclass(frozen=True)
class MaskPrompt:
    """A binary mask (H x W, nonzero = object) on the prompt image."""

    mask: np.ndarray


@dataclass(frozen=True)
class BoxPrompt:
    """A box (x0, y0, x1, y1) in pixels of the prompt image."""

    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class PointsPrompt:
    """Clicks (N x 2, x then y, pixels) with labels (1 object, 0 background)."""

    points: np.ndarray
    labels: np.ndarray


Prompt = Union[MaskPrompt, BoxPrompt, PointsPrompt]


@dataclass
class TargetResult:
    """One target on one frame."""

    target_id: int
    label: str
    mask: np.ndarray  # H x W bool at the frame's resolution
    score: float  # object presence probability in [0, 1]
    box: Optional[tuple[int, int, int, int]]  # x0, y0, x1, y1 inclusive; None if empty
    state: TargetState
    low_res_logits: Optional[object] = field(default=None, repr=False)  # torch tensor


@dataclass
class StepResult:
    """All targets of one stream on one frame."""

    stream_id: str
    frame_index: int
    stamp: float
    targets: list[TargetResult]
    step_seconds: float = 0.0
    events: list[str] = field(default_factory=list)  # human-readable state changes
    # results of earlier frames completed on this step (a clip-mode caption target):
    # (frame index, that frame's stamp, result), oldest first
    late: list[tuple[int, float, TargetResult]] = field(default_factory=list)
