"""FSSAM as a per-target tracker: a reference target segmented afresh on every frame.

Xu et al., "Unlocking the Power of SAM 2 for Few-Shot Segmentation" (ICML 2025). Each
frame of the stream is FSSAM's query; the target's k (image, mask) pairs are its
supports. `FssamTracker` implements `engine.seams.TargetTracker` with `variant_key`
None, so the engine hands it the stream's plain image-encoder pass (`PlainFrame`).

Split of the work (the paper's stages, as in `segmenter.py`):

- once, at construction (support side, `SupportState`): DINOv2 patch features of the
  supports and, from them, each shot's foreground and background prototypes (Pseudo
  Prompt Generator); SAM2 image features of each support and its mask-as-output memory
  (memory, position encoding, object pointer), with the slot's temporal code already
  added to the positions; the support masks on the memory grid for Iterative Memory
  Refinement and for Support-Calibrated Memory Attention. Only these are kept; the
  support images and their SAM2 / DINOv2 feature maps are dropped.
- every frame (query side, `FssamTracker.query`): DINOv2 on the frame, the two priors
  against the stored prototypes, the query-FG and query-Disc memories (two memory-encoder
  passes), 3 refinement iterations, memory attention with the support calibration in all
  four layers, SAM2's decoder without prompts, the mask with the best predicted IoU. The
  support-side masked averages inside refinement (on 32 x 32 memories) and calibration
  (on each layer's projected keys) are recomputed per frame by the parity-tested modules;
  each is one masked average over the 32 x 32 memory grid per shot.

SAM2 features of the frame. FSSAM makes its SAM2 input from the frame by a bilinear
resize of the 0..255 values to 512 x 512 (align_corners=False, no antialias), then /255
and ImageNet normalisation. The engine's `FramePreprocessor` does exactly the same for a
frame that is already 512 x 512 (no resize in either, same arithmetic: bit-identical, as
tested), so with ``query_features="shared"`` (default) the tracker takes the engine's
plain pass and adds no second image-encoder pass. For other frame sizes the engine
resizes differently (bicubic, antialiased, clamped, or PIL's bicubic with
``preprocessing: official``): on a 480 x 640 frame the normalised inputs differ by up to
0.73 (mean 0.15), i.e. up to ~0.17 of the 0..1 pixel range; the resulting mask is then
FSSAM's on slightly different pixels, not FSSAM's output (with random weights, hiera_t,
640 x 480: low-res logits moved by up to 0.07; what that does to a trained model's masks
is not measured here). ``query_features="own"`` runs
FSSAM's own SAM2 pass on every frame (exact FSSAM at any size, at the price of a second
image-encoder pass; `bench/fssam_cost.py` measures both). DINOv2 always sees FSSAM's own
resize of the frame.

What the engine does with the output: `Tracked.low_res_masks` is the decoder's best mask
(1, 1, 128, 128) and `Tracked.frame_logits` FSSAM's output at the frame's size (the 512 x 512
logits resized bilinearly with align_corners=True, as FSSAM's evaluation does), so the
published mask is FSSAM's `FssamOutput.mask`. FSSAM has no absence gate: the mask is
never replaced when the object score says absent. The engine's state machine
(acquiring / tracked / occluded / lost, `SegmentationEngine._update_state`) runs on
FSSAM's decoder object score as on any target's; note that the engine publishes the
mask whatever the state, so a caller that wants "no mask when absent" gates on the
result's state or score.

No temporal memory: FSSAM segments each frame from the supports alone. The target's
`TargetMemory` is left untouched (empty; it adds nothing to `retained_bytes`), and
`index` is unused, so the output on a frame does not depend on earlier frames. The
tracker keeps no per-frame state: one instance may serve several streams. What it
keeps between frames is the support state, `nbytes()`.

Requirements: the engine's model must be FSSAM's SAM2 (the same module object, at
image_size 512; FSSAM's checkpoints hold SAM 2.0 Hiera-S) when the features are shared;
DINOv2 is any `Dinov2Model` built by `dino.build_dinov2` (ViT-B/14 for FSSAM's
checkpoints). Precision: under the engine's bf16 autocast (CUDA, precision auto / bf16)
the per-frame stages run in autocast like every target's. Parity is pinned in float32:
the stages against the official code (test/adapters/test_fssam_parity.py), this tracker through
the engine against `FssamSegmenter.segment` (test/adapters/test_fssam_tracker.py: bit-identical on
512 x 512 frames).

Cost: per frame one DINOv2 pass at 560 x 560, two memory-encoder passes, memory attention
over (k + 1) x 1024 memory tokens plus pointers, and one decode; with FSSAM's ViT-B/14 on a
CPU the DINOv2 pass dominates (`bench/fssam_cost.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures, encode_image
from refseg_ros.engine.memory import TargetMemory
from refseg_ros.engine.seams import PlainFrame, Tracked

from ..dino import normalise_for_dino, patch_features
from .calibration import SupportCalibration
from .priors import priors_from_prototypes, shot_prototypes
from .refinement import refine_disc_memory
from .segmenter import IGNORE_LABEL, IMAGE_SIZE, FssamOptions, FssamOutput, FssamSegmenter

QUERY_FEATURES = ("shared", "own")


@dataclass
class SupportState:
    """The support side of one target, computed once (see the module docstring).

    S = shots, C = DINOv2 width, m = SAM2 mem_dim (64), g = memory grid (512 / 16 = 32);
    the support masks are taken at 512 x 512 (nearest, ignore = 0) and kept only as below.
    fg_prototypes, bg_prototypes: S tensors (1, C, 1, 1) float32, the masked averages of
    each shot's DINOv2 patch features under its mask (bilinear, align_corners=True, to the
    patch grid) and under 1 - mask;
    memories (S, m, g, g) bf16, SAM2's mask-as-output memories; memory_pos: S tensors
    (1, m, g, g) float32, their position encodings plus the conditioning slot's temporal
    code; pointers (S, 256) float32 object pointers; mask_grid (S, 1, g, g) float32, the masks
    resized bilinearly (align_corners=True) for refinement; calibration: the
    `SupportCalibration` hook over the masks resized nearest to the grid, or None.
    """

    fg_prototypes: list[torch.Tensor]
    bg_prototypes: list[torch.Tensor]
    memories: torch.Tensor
    memory_pos: list[torch.Tensor]
    pointers: torch.Tensor
    mask_grid: torch.Tensor
    calibration: Optional[SupportCalibration]

    @property
    def shots(self) -> int:
        return int(self.memories.shape[0])

    def nbytes(self) -> int:
        tensors = [self.memories, self.pointers, self.mask_grid, *self.fg_prototypes,
                   *self.bg_prototypes, *self.memory_pos]
        if self.calibration is not None:
            tensors.append(self.calibration.support_masks)
        return sum(t.numel() * t.element_size() for t in tensors)


def check_supports(supports: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> None:
    """Refuse supports FSSAM cannot use: ValueError when the counts differ or are 0, an
    image is not H x W x 3 uint8, a label is not the image's H x W, or a label holds values
    other than 0 (background), 1 (object), 255 (ignore) (bool masks are accepted)."""
    if len(supports) == 0 or len(supports) != len(labels):
        raise ValueError(f"{len(supports)} support images for {len(labels)} labels")
    for i, (image, label) in enumerate(zip(supports, labels)):
        image, label = np.asarray(image), np.asarray(label)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"support {i}: an image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
        if tuple(label.shape) != tuple(image.shape[:2]):
            raise ValueError(f"support {i}: label {tuple(label.shape)} for an image of {tuple(image.shape[:2])}")
        values = set(np.unique(label).tolist()) - {0, 1, IGNORE_LABEL}
        if values:
            raise ValueError(f"support {i}: label values {sorted(values)[:5]}; "
                             f"expected 0, 1 and {IGNORE_LABEL} (ignore)")


class FssamTracker:
    """One reference target tracked by FSSAM on every frame (`engine.seams.TargetTracker`).

    Add it with `engine.add_tracked_target(stream_id, tracker, label=...)`; the engine's
    model must be `sam2`. See the module docstring for what is computed when.
    """

    variant_key = None  # the engine's shared plain pass (PlainFrame)

    def __init__(self, sam2: torch.nn.Module, dino: torch.nn.Module, supports: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], options: FssamOptions = FssamOptions(),
                 query_features: str = "shared"):
        """sam2: FSSAM's SAM2 (image_size 512), the engine's model; dino: FSSAM's DINOv2
        (`Dinov2Model`); supports: k >= 1 images (H, W, 3) uint8 RGB, any size; labels: their
        (H, W) masks, {0 background, 1 object, 255 ignore} or bool; options: FSSAM's
        (`FssamOptions()` the paper, `.official()` the release); query_features: "shared"
        (the engine's plain pass; exact FSSAM for 512 x 512 frames) or "own" (FSSAM's own
        SAM2 pass of each frame; exact at any size, one more image-encoder pass per frame).

        Raises ValueError: sam2's image_size is not 512, an unknown `query_features`, bad
        supports (`check_supports`), a support mask with no object pixel at 512 x 512.
        Runs DINOv2 once on the k supports and SAM2's image and memory encoders once per
        support (no grad).
        """
        if query_features not in QUERY_FEATURES:
            raise ValueError(f"query_features must be one of {QUERY_FEATURES}, got {query_features!r}")
        check_supports(supports, labels)
        self.segmenter = FssamSegmenter(sam2, dino, options)  # raises unless image_size is 512
        self.options = options
        self.query_features = query_features
        self.support = self._prepare_supports(supports, labels)

    @classmethod
    def from_segmenter(cls, segmenter: FssamSegmenter, supports: Sequence[np.ndarray],
                       labels: Sequence[np.ndarray], options: Optional[FssamOptions] = None,
                       query_features: str = "shared") -> "FssamTracker":
        """A tracker on `segmenter`'s networks; `options` None takes the segmenter's."""
        return cls(segmenter.sam2, segmenter.dino, supports, labels,
                   segmenter.options if options is None else options, query_features)

    @property
    def sam2(self) -> torch.nn.Module:
        return self.segmenter.sam2

    @property
    def dino(self) -> torch.nn.Module:
        return self.segmenter.dino

    @property
    def shots(self) -> int:
        return self.support.shots

    def nbytes(self) -> int:
        """Bytes of the support state kept between frames (not counted by the engine's
        `retained_bytes`, which counts target memories and feature variants)."""
        return self.support.nbytes()

    # -- support side, once ------------------------------------------------------------------

    @torch.no_grad()
    def _prepare_supports(self, supports: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> SupportState:
        seg = self.segmenter
        images = torch.cat([seg.image_input(np.asarray(s)) for s in supports])  # (S, 3, 512, 512) 0..255
        masks = torch.cat([seg.mask_input(np.asarray(m)) for m in labels])  # (S, 1, 512, 512)
        empty = [i for i in range(masks.shape[0]) if not bool(masks[i].any())]
        if empty:
            raise ValueError(f"support masks {empty} hold no object pixel at {IMAGE_SIZE} x {IMAGE_SIZE}")
        # Pseudo Prompt Generator, support half: DINOv2 features -> per-shot prototypes.
        dino_supports = patch_features(seg.dino, normalise_for_dino(images))
        fg_protos, bg_protos = shot_prototypes(dino_supports, masks)
        # Support memories (mask-as-output, as SAM2 encodes a mask prompt).
        model = seg.sam2
        encoded = [seg._memory(encode_image(model, seg._sam2_input(images[i:i + 1])), masks[i:i + 1])
                   for i in range(images.shape[0])]
        slot_code = model.maskmem_tpos_enc[model.num_maskmem - 1]  # conditioning slot (t_pos 0)
        memories = torch.cat([m for m, _, _ in encoded])
        grid_mem = tuple(memories.shape[-2:])
        calibration = None
        if self.options.calibration is not None:
            calibration = SupportCalibration(F.interpolate(masks, size=grid_mem, mode="nearest"),
                                             mode=self.options.calibration)
        return SupportState(
            fg_prototypes=fg_protos,
            bg_prototypes=bg_protos,
            memories=memories,
            memory_pos=[p + slot_code.view(1, -1, 1, 1) for _, p, _ in encoded],
            pointers=torch.cat([p for _, _, p in encoded]),
            mask_grid=F.interpolate(masks, size=grid_mem, mode="bilinear", align_corners=True),
            calibration=calibration,
        )

    # -- query side, every frame -----------------------------------------------------------

    @torch.no_grad()
    def query(self, frame: np.ndarray, features: Optional[FrameFeatures] = None) -> FssamOutput:
        """FSSAM on one query frame against the stored supports.

        frame: (H, W, 3) uint8 RGB. features: SAM2 image features of the frame to use
        (the engine's plain pass); None runs FSSAM's own SAM2 pass. Returns `FssamOutput`
        (logits (1, 1, 512, 512), logits_input_size (1, 1, H, W), low_res_logits
        (1, 1, 128, 128), ious (1, 3), object_score_logits (1, 1); no trace). With
        `features` None this equals `FssamSegmenter.segment(frame, supports, labels)`.
        Raises ValueError for a frame that is not H x W x 3.
        """
        seg, support, options = self.segmenter, self.support, self.options
        model = seg.sam2
        size = (IMAGE_SIZE, IMAGE_SIZE)
        image = seg.image_input(frame)  # (1, 3, 512, 512) float 0..255
        if features is None:
            features = encode_image(model, seg._sam2_input(image))
        dino_query = patch_features(seg.dino, normalise_for_dino(image))
        priors = priors_from_prototypes(dino_query, support.fg_prototypes,
                                        support.bg_prototypes if options.background_prototype else None, size)

        fg_memory, _, _ = seg._memory(features, priors.fg)
        disc_memory, disc_pos, disc_ptr = seg._memory(features, priors.disc)
        grid = features.feat_sizes[-1]
        prior_fg_grid = F.interpolate(priors.fg, size=grid, mode="bilinear", align_corners=True)
        prior_disc_grid = F.interpolate(priors.disc, size=grid, mode="bilinear", align_corners=True)
        refined, _ = refine_disc_memory(support.memories, support.mask_grid, fg_memory, disc_memory,
                                        prior_fg_grid, prior_disc_grid, options.refinement_iterations)

        # Memory tokens: supports, refined query-Disc, then the pointers (split to mem_dim).
        slot_code = model.maskmem_tpos_enc[model.num_maskmem - 1]
        memory = [support.memories[i:i + 1].float().flatten(2).permute(2, 0, 1) for i in range(support.shots)]
        memory.append(refined.float().flatten(2).permute(2, 0, 1))
        memory_pos = [p.flatten(2).permute(2, 0, 1) for p in support.memory_pos]
        memory_pos.append(disc_pos.flatten(2).permute(2, 0, 1) + slot_code)
        pointers = torch.cat([support.pointers, disc_ptr])[:, None]  # (P, 1, C)
        split = model.hidden_dim // model.mem_dim
        pointers = pointers.reshape(-1, 1, split, model.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        memory.append(pointers)
        memory_pos.append(torch.zeros_like(pointers))
        attended = heads.attend_memory_tokens(model, features.top(1), features.top_pos(1), torch.cat(memory),
                                              torch.cat(memory_pos), pointers.shape[0], support.calibration)
        pix_feat = attended.permute(1, 2, 0).reshape(1, model.hidden_dim, *grid)
        decoded = heads.decode(model, pix_feat, features.high_res(1), multimask=True, gate_by_object_score=False)
        logits = decoded.high_res_masks
        at_input = F.interpolate(logits, size=(int(frame.shape[0]), int(frame.shape[1])),
                                 mode="bilinear", align_corners=True)
        return FssamOutput(logits=logits, logits_input_size=at_input, low_res_logits=decoded.low_res_masks,
                           ious=decoded.ious, object_score_logits=decoded.object_score_logits)

    # -- the engine seam ---------------------------------------------------------------------

    def new_variant(self):
        """Not used: `variant_key` is None, so the engine hands over its plain pass."""
        raise RuntimeError("FssamTracker uses the engine's plain pass (variant_key None); it has no variant")

    def track(self, model: torch.nn.Module, encoded: PlainFrame, memory: TargetMemory, index: int,
              frame_hw: tuple[int, int]) -> Tracked:
        """FSSAM on frame `index` (`encoded.frame`, (H, W) = `frame_hw`) -> `Tracked`:
        low_res_masks (1, 1, 128, 128) float32 logits, object_score_logits (1, 1),
        frame_logits (1, 1, H, W) float32 (FSSAM's output at the frame's size).

        `memory` and `index` are unused (no temporal memory). Raises TypeError when
        `encoded` is not a `PlainFrame`; ValueError when features are shared and `model`
        is not this tracker's SAM2 (the engine's features would come from another network).
        """
        if not isinstance(encoded, PlainFrame):
            raise TypeError(f"FssamTracker needs the engine's PlainFrame, got {type(encoded).__name__}")
        features = None
        if self.query_features == "shared":
            if model is not self.sam2:
                raise ValueError("FssamTracker with shared features needs the engine's model to be FSSAM's SAM2 "
                                 "(the same module); build the engine on it or use query_features='own'")
            features = encoded.features
        out = self.query(encoded.frame, features)
        frame_logits = out.logits_input_size.float()
        if tuple(frame_logits.shape[-2:]) != tuple(frame_hw):
            raise ValueError(f"frame of {tuple(encoded.frame.shape[:2])} for frame_hw {tuple(frame_hw)}")
        return Tracked(out.low_res_logits.float(), out.object_score_logits, frame_logits)
