"""Reference (one-shot / k-shot) adapters. FSSAM: `fssam.FssamSegmenter`."""

from .calibration import SupportCalibration
from .checkpoint import load_fssam_checkpoint, load_fssam_state
from .fssam import FssamEncoded, FssamOptions, FssamOutput, FssamSegmenter

__all__ = ["FssamEncoded", "FssamOptions", "FssamOutput", "FssamSegmenter", "SupportCalibration",
           "load_fssam_checkpoint", "load_fssam_state"]
