"""Grounding fallback for text targets: zero-shot boxes for a caption, ROS-free.

A caption is turned into a box by a transformers zero-shot detector loaded from a
local folder: Grounding DINO (Liu et al. 2023, "Grounding DINO: Marrying DINO with
Grounded Pre-Training for Open-Set Object Detection"), MM-Grounding-DINO / LLMDet on the
same classes, or OWLv2 (Minderer et al. 2023, "Scaling Open-Vocabulary Object
Detection"). The chosen box becomes the target's `BoxPrompt` for the engine's SAM2.

One idea per module:

| module | one idea |
|---|---|
| `detection.py` | `Detection`: a box (x0, y0, x1, y1, frame pixels), its score, its words |
| `loading.py` | a local folder's config.json `model_type` -> family, model and processor; `GroundingModelError` |
| `detector.py` | `GroundingDetector.detect(image, caption)`: boxes in frame pixels, best first |
| `selection.py` | `best_box` (threshold, degenerate boxes refused), `box_iou`, `match_to_track`, `continues_track` |
| `policy.py` | `RegroundPolicy`: whether a grounding call is due from a target's state and times |
| `worker.py` | `GroundingWorker`: detection on a background `LatestWorker`, latest request per key only |

Importing this package does not import transformers; `GroundingDetector.from_folder`
does.
"""

from .detection import Box, Detection
from .detector import GroundingDetector
from .loading import FAMILIES, Family, GroundingModelError, read_family
from .policy import RegroundPolicy
from .selection import best_box, box_iou, continues_track, degenerate_reason, eligible, match_to_track
from .worker import GroundingResult, GroundingWorker

__all__ = [
    "Box",
    "Detection",
    "FAMILIES",
    "Family",
    "GroundingDetector",
    "GroundingModelError",
    "GroundingResult",
    "GroundingWorker",
    "RegroundPolicy",
    "best_box",
    "box_iou",
    "continues_track",
    "degenerate_reason",
    "eligible",
    "match_to_track",
    "read_family",
]
