"""Acquisition and re-acquisition of a reference target that is not being tracked.

Two phases, so that the slow one can run beside tracking (`adapters.latest_worker`):

1. `Acquirer.propose(frame)` (slow, any thread): one DINOv2 pass over the frame, the raw
   prototype prior (`reference_prior`; FSSAM's / PFENet-style training-free prior, as in
   "Unlocking the Power of SAM 2 for Few-Shot Segmentation" and CAV-SAM), and its k best
   separated peaks (`peaks`) as candidate clicks in frame pixels. Cells that look more
   like the examples' background than their foreground (raw foreground cosine minus
   background cosine <= `background_margin`) cannot be candidates.
2. `Acquirer.decide(model, features, proposal, frame_hw)` (fast, the engine's thread, on
   the frame it is stepping): ONE batched SAM2 decode of the k clicks on that frame's
   existing image embedding (`candidates.decode_candidates`), each mask scored and
   checked (`candidates.score_candidates`: no empty, full-frame or complement mask), the
   best valid score fed to the M-of-K gate (`gate`). On acceptance: that candidate's
   mask, ready to be pinned as a conditioning memory on this frame; otherwise None.

The proposal may come from an earlier frame than the one decided on; its clicks are
scaled to the current frame's size when the two differ, and the mask's similarity is
read on the proposal's map. The candidate scoring, the refusals and the gate are this
project's own design.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures

from .candidates import CandidateScore, ScoringRules, decode_candidates, score_candidates
from .dino_encoder import DinoEncoder, as_encoder
from .gate import AcquisitionGate
from .peaks import Peak, find_peaks, grid_to_frame
from .reference_prior import ReferencePrototypes, prior_maps, prototypes_from_examples


@dataclass(frozen=True)
class AcquirerConfig:
    """Settings of one target's acquisition.

    candidates: k, clicks decoded per frame (>= 1); min_distance: peak separation in
    prior-grid cells (>= 1; a 37 x 37 grid cell is 1/37 of the frame a side);
    min_peak_score: raw foreground cosine a peak needs (-inf: any);
    background_margin: a cell is a candidate only when foreground - background cosine
    exceeds it (None: background prototypes are not used); threshold: raw score an
    observation needs to count as a hit; m, window: hits needed among the last `window`
    frames looked at; rules: candidate scoring and refusals.

    The default threshold (0.5) is a starting point for DINOv2 ViT-B/14 features, not a
    calibrated value: measure the scores of present and absent targets on your data.
    """

    candidates: int = 5
    min_distance: int = 2
    min_peak_score: float = float("-inf")
    background_margin: Optional[float] = 0.0
    threshold: float = 0.5
    m: int = 2
    window: int = 3
    rules: ScoringRules = field(default_factory=ScoringRules)

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.min_distance < 1:
            raise ValueError(f"need candidates >= 1 and min_distance >= 1, got "
                             f"{self.candidates}, {self.min_distance}")
        AcquisitionGate(self.threshold, self.m, self.window)  # validates the gate's settings


@dataclass
class Proposal:
    """What the prior found on one frame (the slow phase's output).

    points_xy: (k', 2) float32 frame pixels (x, y), k' <= k candidates, best first
    (k' = 0: nothing looks like the target); peaks: their grid cells and raw foreground
    cosines; foreground, background: (h, w) float32 CPU raw cosine maps (background None
    without background prototypes); frame_hw: (H, W) of that frame in pixels; stamp: the
    frame's stamp (the caller's units, seconds in the node); seconds: how long propose
    took (wall clock).
    """

    points_xy: np.ndarray
    peaks: list[Peak]
    foreground: torch.Tensor
    background: Optional[torch.Tensor]
    frame_hw: tuple[int, int]
    stamp: float = 0.0
    seconds: float = 0.0


@dataclass
class Acquisition:
    """An accepted candidate on the frame decided on: pin it as a conditioning memory.

    point_xy: (2,) float32 its click, frame pixels; verdict: its score and parts;
    low_res_logits: (1, 1, S/4, S/4) float32 SAM2 logits (on the model's device), the
    mask a prompt frame's memory is encoded from (`encode_acquisition_memory`); obj_ptr:
    (1, C) its object pointer; object_score_logits: (1, 1);
    mask: (H, W) bool numpy, low_res_logits bilinearly resized to the frame, > 0;
    proposal_stamp: the stamp of the frame the clicks were found on.
    """

    point_xy: np.ndarray
    verdict: CandidateScore
    low_res_logits: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    mask: np.ndarray
    proposal_stamp: float

    @property
    def score(self) -> float:
        """The accepted candidate's raw score (see `candidates`)."""
        return self.verdict.score


@dataclass
class Decision:
    """Everything `Acquirer.evaluate` saw on one frame: every candidate's verdict, the
    best valid one (None: none valid), the gate's answer and, when it accepted, the
    acquisition."""

    verdicts: list[CandidateScore]
    best: Optional[CandidateScore]
    accepted: bool
    acquisition: Optional[Acquisition] = None


class Acquirer:
    """One reference target's prior, candidate scoring and gate.

    encoder: a DinoEncoder (or a Dinov2Model, wrapped with its default input size);
    prototypes: the target's, from the same encoder. `propose` only reads the encoder and
    the prototypes, `decide` only touches the gate, so one thread may propose while
    another decides. Raises ValueError when the prototypes' channels differ from the
    encoder's.
    """

    def __init__(self, encoder: DinoEncoder | torch.nn.Module, prototypes: ReferencePrototypes,
                 config: AcquirerConfig = AcquirerConfig()):
        self.encoder = as_encoder(encoder)
        if prototypes.channels != self.encoder.channels:
            raise ValueError(f"prototypes of {prototypes.channels} channels for an encoder of "
                             f"{self.encoder.channels}: taught with another encoder")
        self.prototypes = prototypes
        self.config = config
        self.gate = AcquisitionGate(config.threshold, config.m, config.window)

    def configure(self, config: AcquirerConfig) -> None:
        """Use `config` from the next proposal and decision on; the gate's window starts
        empty when it changes."""
        if config != self.config:
            self.gate = AcquisitionGate(config.threshold, config.m, config.window)
        self.config = config

    @classmethod
    def from_examples(cls, encoder: DinoEncoder | torch.nn.Module, images: Sequence[np.ndarray],
                      masks: Sequence[np.ndarray], config: AcquirerConfig = AcquirerConfig()) -> "Acquirer":
        """Teach from (image (H, W, 3) uint8, mask (H, W) bool) examples (`prototypes_from_examples`)."""
        encoder = as_encoder(encoder)
        return cls(encoder, prototypes_from_examples(encoder, images, masks), config)

    # ------------------------------------------------------------------ slow phase
    def propose(self, frame: np.ndarray, stamp: float = 0.0) -> Proposal:
        """Candidate clicks on `frame` ((H, W, 3) uint8 RGB): one DINOv2 pass, the raw
        prior maps, up to `config.candidates` peaks. Raises ValueError for a bad frame."""
        start = time.perf_counter()
        with torch.inference_mode():
            maps = prior_maps(self.encoder(frame), self.prototypes)
            fg = maps.foreground.float().cpu()
            bg = None if maps.background is None else maps.background.float().cpu()
        eligible = fg
        if bg is not None and self.config.background_margin is not None:
            eligible = torch.where(fg - bg > self.config.background_margin, fg,
                                   torch.full_like(fg, float("-inf")))
        peaks = find_peaks(eligible, self.config.candidates, self.config.min_distance,
                           self.config.min_peak_score)
        points = grid_to_frame(peaks, tuple(fg.shape), frame.shape[:2])
        return Proposal(points, peaks, fg, bg, (int(frame.shape[0]), int(frame.shape[1])),
                        float(stamp), time.perf_counter() - start)

    # ------------------------------------------------------------------ fast phase
    def evaluate(self, model: torch.nn.Module, features: FrameFeatures, proposal: Proposal,
                 frame_hw: tuple[int, int], image_size: Optional[int] = None) -> Decision:
        """Decode, score and gate `proposal`'s clicks on the current frame (the engine's
        SAM2 `model`, the frame's `features`, its (H, W) `frame_hw`); one gate update."""
        if len(proposal.points_xy) == 0:
            self.gate.update(None)
            return Decision([], None, False)
        points = _rescale(proposal.points_xy, proposal.frame_hw, frame_hw)
        with torch.inference_mode():
            candidates = decode_candidates(model, features, points, frame_hw, image_size)
            verdicts = score_candidates(candidates, proposal.foreground, frame_hw, self.config.rules)
        valid = [v for v in verdicts if v.valid and not math.isnan(v.score)]
        best = max(valid, key=lambda v: v.score) if valid else None
        accepted = self.gate.update(None if best is None else best.score)
        if not accepted or best is None:
            return Decision(verdicts, best, False)
        i = best.index
        low_res = candidates.low_res[i:i + 1]
        with torch.inference_mode():
            full = F.interpolate(low_res, size=tuple(frame_hw), mode="bilinear", align_corners=False)
            mask = (full[0, 0] > 0).cpu().numpy()
        acquisition = Acquisition(candidates.points_xy[i].copy(), best, low_res, candidates.obj_ptr[i:i + 1],
                                  candidates.object_score_logits[i:i + 1].view(1, 1), mask, proposal.stamp)
        return Decision(verdicts, best, True, acquisition)

    def decide(self, model: torch.nn.Module, features: FrameFeatures, proposal: Proposal,
               frame_hw: tuple[int, int], image_size: Optional[int] = None) -> Optional[Acquisition]:
        """`evaluate(...)`'s acquisition: the accepted candidate, or None (absence, or
        not yet M of the last K frames)."""
        return self.evaluate(model, features, proposal, frame_hw, image_size).acquisition

    def presence(self, proposal: Proposal, box: Optional[tuple[int, int, int, int]],
                 frame_hw: tuple[int, int]) -> Optional[float]:
        """The best raw foreground cosine of `proposal`'s map among the cells that look
        more like the examples' foreground than their background (as candidates must),
        within `box` ((x0, y0, x1, y1) pixels of a `frame_hw` = (H, W) frame, the
        tracked mask's box) widened by half its size on each side, and by at least one
        grid cell, for motion since the proposal's frame. None: no box, or no such cell.
        """
        if box is None:
            return None
        fg = proposal.foreground
        eligible = fg
        if proposal.background is not None and self.config.background_margin is not None:
            eligible = torch.where(fg - proposal.background > self.config.background_margin, fg,
                                   torch.full_like(fg, float("-inf")))
        rows, cols = fg.shape
        height, width = frame_hw
        x0, y0, x1, y1 = (float(v) for v in box)
        grow_x = max((x1 - x0) / 2, width / cols)
        grow_y = max((y1 - y0) / 2, height / rows)
        c0 = int(np.clip(np.floor((x0 - grow_x) / width * cols), 0, cols - 1))
        c1 = int(np.clip(np.ceil((x1 + grow_x) / width * cols), c0 + 1, cols))
        r0 = int(np.clip(np.floor((y0 - grow_y) / height * rows), 0, rows - 1))
        r1 = int(np.clip(np.ceil((y1 + grow_y) / height * rows), r0 + 1, rows))
        best = float(eligible[r0:r1, c0:c1].max())
        return best if math.isfinite(best) else None

    def reset(self) -> None:
        """Empty the gate's window (call when the target is tracked again)."""
        self.gate.reset()


def encode_acquisition_memory(model: torch.nn.Module, features: FrameFeatures, acquisition: Acquisition,
                              reweight: Optional[heads.MemoryWeighting] = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditioning memory of an accepted candidate on the frame it was decided on, as
    the engine encodes a prompt frame's: its low-resolution logits upsampled to S x S
    (bilinear), then `heads.encode_memory(..., from_prompt=True)`. Returns
    (maskmem_features (1, mem_dim, h, w) bf16, maskmem_pos_enc (1, mem_dim, h, w)); pin them
    with `acquisition.obj_ptr` at the frame's index (`MemoryEntry`). `features` must be that
    frame's, the ones `decide` was given.
    """
    size = int(model.image_size)
    high = F.interpolate(acquisition.low_res_logits, size=(size, size), mode="bilinear", align_corners=False)
    return heads.encode_memory(model, features, high, acquisition.object_score_logits,
                               from_prompt=True, reweight=reweight)


def _rescale(points_xy: np.ndarray, source_hw: tuple[int, int], target_hw: tuple[int, int]) -> np.ndarray:
    """(k, 2) pixels of a source_hw frame -> the same relative places on a target_hw frame."""
    if tuple(source_hw) == tuple(target_hw):
        return points_xy
    scale = np.array([target_hw[1] / source_hw[1], target_hw[0] / source_hw[0]], dtype=np.float32)
    return (points_xy * scale).astype(np.float32)
