"""One zero-shot detection: a box in frame pixels, its score and the phrase it matched."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels (float)


@dataclass(frozen=True)
class Detection:
    """A detected box for a caption.

    - `box`: (x0, y0, x1, y1), floats, pixels of the frame the detector ran on, x to the
      right and y down, corners continuous (a box covering a whole W x H frame is
      (0, 0, W, H)); the detector clips it to the frame.
    - `score`: confidence in [0, 1] (the model's sigmoid score).
    - `label`: the words of the caption the box was matched to (the caption itself
      when the model names no words).
    - `frame_size`: (height, width) in pixels of that frame, or None when unknown (a
      box made by hand); `selection.best_box` needs it to refuse full-frame boxes.

    The same box, as the engine's prompt: `refseg_ros.engine.types.BoxPrompt(box=d.box)`.
    """

    box: Box
    score: float
    label: str
    frame_size: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        if len(self.box) != 4 or not all(math.isfinite(float(v)) for v in self.box):
            raise ValueError(f"box must be 4 finite numbers x0, y0, x1, y1; got {self.box}")
        if not math.isfinite(float(self.score)):
            raise ValueError(f"score must be finite; got {self.score}")
