"""The trackers of reference targets, configured once per node; ROS-free.

`reference_mode` names a recipe (`runtime.recipes`: its tracker, and whether the prior
and the transition frames join it); this module makes its tracker:

- `baseline` (default): the reference is pinned as a conditioning memory and SAM2's
  tracker follows the object from it (correspondence as video), with acquisition on top
  when a DINOv2 folder is given (`runtime.acquisition`);
- `ttga`: CAV-SAM's test-time geometric alignment: a copy of SAM2's FPN neck is tuned
  per target on augmented views of its examples (cyclic consistency, `ttga_steps` Adam
  steps) in a background thread while the target is tracked with the untuned copy; the
  tuned neck is swapped in between frames when ready (`adapters.reference.cavsam.ttga`). The
  trunk pass stays shared. With `dbst_pipeline` set too (`runtime.transitions`), each
  TTGA target also gets CAV-SAM's diffusion transition frames, encoded through its own
  neck (the untuned copy until the tuned one is swapped in, then again through the tuned
  one): CAV-SAM in full, both halves on one target (`list_targets`: `ttga+dbst`);
- `fssam`: every frame is FSSAM's query against the target's examples (pseudo prompts,
  iterative memory refinement, support-calibrated memory attention;
  `adapters.reference.fssam.tracker`). Needs an FSSAM checkpoint: its SAM 2.0 Hiera-S
  becomes the node's model (`model: sam2_hiera_s`, `image_size: 512`) and its DINOv2
  ViT-B/14 the prior's encoder. FSSAM has no absence gate of its own.

With acquisition (`runtime.acquisition`), the prior gates a mode's tracker as it gates
SAM2's tracking of a baseline target: the tracker runs, and the target's mask is
published, only once the prior found it, and its watch declares it lost when it is gone.
In fssam mode the prior uses FSSAM's DINOv2 unless `dino_model` names another, so the
gate is on by default there (`list_targets`: `fssam+acquisition`, `ttga+acquisition`,
`ttga+acquisition+dbst`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..engine import SegmentationEngine
from .modes import NAMES, parse_mode
from .parameters import check_values, parameter

MODES = NAMES  # every name reference_mode takes (runtime.modes)


@dataclass
class ReferenceSettings:
    """reference_mode: a recipe's name (MODES, runtime.modes); fssam_checkpoint: FSSAM's
    checkpoint file; fssam_official: the release's behaviour (FssamOptions.official)
    instead of the paper's; ttga_steps: Adam steps of a TTGA target's neck tuning. The
    node parameters of the same names, with their defaults, ranges and choices
    (runtime.parameters.PARAMETERS)."""

    reference_mode: str = parameter("reference_mode")
    fssam_checkpoint: str = parameter("fssam_checkpoint")
    fssam_official: bool = parameter("fssam_official")
    ttga_steps: int = parameter("ttga_steps")

    def check(self) -> None:
        """Each value against its parameter's range or choices, and the mode's grammar.

        Raises:
            ValueError: naming the parameter.
        """
        check_values(self)
        try:
            parse_mode(self.reference_mode)
        except ValueError as exc:
            raise ValueError(f"parameter reference_mode: {exc}") from None


@dataclass(frozen=True)
class FssamWeights:
    """An FSSAM checkpoint as the engine's weights source (`engine.model.WeightsSource`):
    its SAM 2.0 Hiera-S is the engine's SAM2, `load` returns its DINOv2 ViT-B/14 (on
    the CPU)."""

    path: str
    kind: str = "FSSAM checkpoint"

    def load(self, sam2):
        """Check every key, then load `sam2` (the engine's model) and a new DINOv2.
        Raises CheckpointError (nothing loaded)."""
        from ..adapters.reference.fssam.checkpoint import load_fssam_checkpoint
        from ..adapters.reference.dino import build_dinov2

        dino = build_dinov2()
        load_fssam_checkpoint(self.path, sam2, dino)
        return dino


class FssamMode:
    """Makes an FSSAM tracker per reference target (the engine's model is FSSAM's SAM2)."""

    path = "fssam"

    def __init__(self, sam2, dino, options):
        self.sam2, self.dino, self.options = sam2, dino, options

    def tracker(self, images: list[np.ndarray], masks: list[np.ndarray]):
        """A tracker for a target taught by these examples ((H, W, 3) uint8, (H, W) bool)."""
        from ..adapters.reference.fssam.tracker import FssamTracker

        return FssamTracker(self.sam2, self.dino, images, [np.asarray(m, bool) for m in masks], self.options)


class TtgaMode:
    """Makes a TTGA tracker per reference target; its tuning job starts at once."""

    path = "ttga"

    def __init__(self, engine: SegmentationEngine, steps: int, synchronous: bool = False):
        self.engine, self.steps, self.synchronous = engine, steps, synchronous

    def tracker(self, images: list[np.ndarray], masks: list[np.ndarray]):
        """A tracker for a target taught by these examples; with `synchronous` (offline
        evaluation) the tuning finishes before it is returned, so results do not depend
        on timing."""
        from ..adapters.reference.cavsam.ttga import start_ttga

        tracker = start_ttga(self.engine.model, list(zip(images, [np.asarray(m, bool) for m in masks])),
                             steps=self.steps, preprocess=self.engine.preprocess,
                             keep_memory_when_absent=self.engine.config.keep_memory_when_absent)
        if self.synchronous and tracker.job is not None:
            tracker.job.result()
        return tracker


def open_reference_mode(settings: ReferenceSettings, engine: SegmentationEngine,
                        synchronous: bool = False) -> tuple[Optional[object], str]:
    """The TTGA or FSSAM mode of `settings.reference_mode`'s tracker, or None and what
    reference targets use instead (never raises: a checkpoint that cannot be loaded is
    the reason, and targets fall back to baseline). `synchronous`: TTGA tunes before
    tracking (offline evaluation)."""
    tracker = parse_mode(settings.reference_mode).tracker
    if tracker == "baseline":
        return None, "reference targets: baseline (pinned examples, SAM2 tracking)"
    if tracker == "ttga":
        return (TtgaMode(engine, settings.ttga_steps, synchronous),
                f"reference targets tracked through a per-target neck tuned by TTGA ({settings.ttga_steps} steps)")
    try:
        from ..adapters.reference.fssam import FssamOptions

        if not settings.fssam_checkpoint:
            raise ValueError("no FSSAM checkpoint given: set the parameter fssam_checkpoint")
        dino = engine.load_weights(FssamWeights(settings.fssam_checkpoint))
        options = FssamOptions.official() if settings.fssam_official else FssamOptions()
        mode = FssamMode(engine.model, dino.to(engine.device), options)
    except Exception as exc:  # a missing file, a checkpoint for another model
        return None, (f"reference_mode fssam could not be loaded ({type(exc).__name__}: {exc}); "
                      "reference targets use the baseline")
    return mode, f"reference targets segmented by FSSAM from {settings.fssam_checkpoint}"
