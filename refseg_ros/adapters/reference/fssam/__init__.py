"""FSSAM on the engine's SAM2 (Xu et al., ICML 2025, "Unlocking the Power of SAM 2 for
Few-Shot Segmentation"): a query segmented from k (image, mask) supports.

| module | one idea |
|---|---|
| `priors.py` | the Pseudo Prompt Generator: DINOv2 foreground and discriminative priors |
| `refinement.py` | Iterative Memory Refinement of the query's discriminative memory |
| `calibration.py` | `SupportCalibration`: Support-Calibrated Memory Attention, as a cross-attention hook |
| `checkpoint.py` | an FSSAM checkpoint -> the engine's SAM2 + DINOv2, all or nothing |
| `segmenter.py` | `FssamSegmenter`: the stages together, one query at a time |
| `tracker.py` | `FssamTracker`: the engine's `TargetTracker`, every frame a query |
"""

from .calibration import SupportCalibration
from .checkpoint import load_fssam_checkpoint, load_fssam_state
from .segmenter import FssamEncoded, FssamOptions, FssamOutput, FssamSegmenter
from .tracker import FssamTracker

__all__ = ["FssamEncoded", "FssamOptions", "FssamOutput", "FssamSegmenter", "FssamTracker",
           "SupportCalibration", "load_fssam_checkpoint", "load_fssam_state"]
