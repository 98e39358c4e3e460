"""FSSAM on the engine's SAM2: one query segmented from k (image, mask) supports.

Xu et al., "Unlocking the Power of SAM 2 for Few-Shot Segmentation" (ICML 2025). The
stages, each in its own module:
1. Pseudo Prompt Generator (`priors`): DINOv2 foreground and discriminative priors.
2. Three memories, encoded by SAM2's memory encoder exactly as SAM2 encodes a mask prompt
   (`engine.heads.mask_as_output` + `encode_memory`, bf16): each support with its mask,
   the query with the foreground prior (query-FG) and with the discriminative prior
   (query-Disc).
3. Iterative Memory Refinement (`refinement`, v1, 3 iterations) of the query-Disc memory.
4. Support-Calibrated Memory Attention (`calibration`) in all four memory-attention
   layers, over [support memories, refined query-Disc memory, their object pointers];
   every memory carries temporal code `maskmem_tpos_enc[num_maskmem - 1]` (a conditioning
   frame), pointers carry position 0.
5. SAM2's mask decoder without prompts; the mask with the best predicted IoU. Like FSSAM,
   no absence gate: the object score does not replace the mask.

The network is SAM 2.0 Hiera-S at 512 (built by `engine.model.build_model`) and DINOv2
ViT-B/14 (`dino.build_dinov2`); weights from an FSSAM checkpoint (`checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures, encode_image

from ..dino import build_dinov2, normalise_for_dino, patch_features
from .calibration import SupportCalibration
from .checkpoint import load_fssam_checkpoint
from .priors import pseudo_prompt_priors
from .refinement import NUM_ITERATIONS, refine_disc_memory

SAM2_MODEL = "sam2_hiera_s"  # SAM 2.0, FSSAM's default ("small")
IMAGE_SIZE = 512
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
IGNORE_LABEL = 255


@dataclass(frozen=True)
class FssamOptions:
    """What FSSAM computes after the two backbones.

    calibration: "paper" (default: every support calibrates, supports' keys/values
    averaged, penalty on the query-Disc block), "official" (the release: first support
    only, penalty on memory block 1, which with two supports is the second support's), or
    None (plain cross-attention; ablation). 1-shot, "paper" == "official".
    refinement_iterations: 3 in FSSAM. background_prototype: False drops the background
    prototype from the discriminative prior (ablation).
    """

    calibration: Optional[str] = "paper"
    refinement_iterations: int = NUM_ITERATIONS
    background_prototype: bool = True

    @classmethod
    def official(cls) -> "FssamOptions":
        """The released code's arithmetic, as the parity fixtures pin it."""
        return cls(calibration="official")


@dataclass
class FssamEncoded:
    """Backbone outputs of one episode (the expensive part, reusable across options).

    query, supports: SAM2 image features (FrameFeatures, one per support); dino_query
    (1, 768, 40, 40), dino_supports (S, 768, 40, 40) float32; support_masks (S, 1, 512, 512)
    float {0, 1}; input_size: the query's original (H, W).
    """

    query: FrameFeatures
    supports: list[FrameFeatures]
    dino_query: torch.Tensor
    dino_supports: torch.Tensor
    support_masks: torch.Tensor
    input_size: tuple[int, int]


@dataclass
class FssamOutput:
    """logits (1, 1, 512, 512) float32, FSSAM's output; logits_input_size (1, 1, H, W)
    (bilinear, align_corners=True, as FSSAM's test.py); low_res_logits (1, 1, 128, 128);
    ious (1, 3); object_score_logits (1, 1) (reported, not applied); trace: every stage
    under the parity fixtures' names (filled when asked)."""

    logits: torch.Tensor
    logits_input_size: torch.Tensor
    low_res_logits: torch.Tensor
    ious: torch.Tensor
    object_score_logits: torch.Tensor
    trace: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """Foreground at the input size, logit >= 0: (H, W) bool."""
        return (self.logits_input_size[0, 0] >= 0).cpu().numpy()


class FssamSegmenter:
    """FSSAM's forward pass on the engine's SAM2 modules (eval, no grad)."""

    def __init__(self, sam2: torch.nn.Module, dino: torch.nn.Module,
                 options: FssamOptions = FssamOptions()):
        if getattr(sam2, "image_size", None) != IMAGE_SIZE:
            raise ValueError(f"FSSAM runs SAM2 at {IMAGE_SIZE}, got image_size {getattr(sam2, 'image_size', None)}")
        self.sam2 = sam2.eval()
        self.dino = dino.eval()
        self.options = options

    @classmethod
    def build(cls, device: str | torch.device = "cpu", checkpoint: Optional[str] = None,
              options: FssamOptions = FssamOptions(), seed: int = 0) -> "FssamSegmenter":
        """Build SAM 2.0 Hiera-S at 512 and DINOv2 ViT-B/14 from configs (no download) and,
        given a path, load an FSSAM checkpoint into both (refused by key on any mismatch)."""
        from refseg_ros.engine.model import build_model

        sam2 = build_model(SAM2_MODEL, image_size=IMAGE_SIZE, device="cpu", seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dino = build_dinov2()
        if checkpoint is not None:
            load_fssam_checkpoint(checkpoint, sam2, dino)
        return cls(sam2.to(device), dino.to(device), options)

    @property
    def device(self) -> torch.device:
        return next(self.sam2.parameters()).device

    # -- inputs --------------------------------------------------------------------------

    def image_input(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, 512, 512) float32 0..255 (bilinear, align_corners=False,
        on float values: what cv2.resize INTER_LINEAR gives FSSAM for upscaling)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"an image must be H x W x 3, got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, torch.float32)
        tensor = tensor.permute(2, 0, 1)[None]
        return F.interpolate(tensor, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)

    def mask_input(self, label: np.ndarray) -> torch.Tensor:
        """(H, W) labels {0 background, 1 object, 255 ignore} -> (1, 1, 512, 512) float {0, 1}
        (nearest; ignore counts as background)."""
        if label.ndim != 2:
            raise ValueError(f"a support label must be H x W, got shape {label.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(label)).to(self.device, torch.float32)[None, None]
        tensor = F.interpolate(tensor, size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")
        return torch.where(tensor == IGNORE_LABEL, torch.zeros_like(tensor), tensor)

    def _sam2_input(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(SAM2_MEAN, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
        std = torch.tensor(SAM2_STD, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
        return (image / 255.0 - mean) / std

    # -- the two backbones -----------------------------------------------------------------

    @torch.no_grad()
    def encode(self, query: np.ndarray, supports: Sequence[np.ndarray],
               support_labels: Sequence[np.ndarray]) -> FssamEncoded:
        """Run DINOv2 and SAM2's image encoder on the query and the supports."""
        if len(supports) == 0 or len(supports) != len(support_labels):
            raise ValueError(f"{len(supports)} support images for {len(support_labels)} labels")
        for i, (image, label) in enumerate(zip(supports, support_labels)):
            if tuple(label.shape) != tuple(image.shape[:2]):
                raise ValueError(f"support {i}: label {tuple(label.shape)} for an image of {tuple(image.shape[:2])}")
            values = set(np.unique(label).tolist()) - {0, 1, IGNORE_LABEL}
            if values:
                raise ValueError(f"support {i}: label values {sorted(values)[:5]}; "
                                 f"expected 0, 1 and {IGNORE_LABEL} (ignore)")
        query_image = self.image_input(query)
        support_images = torch.cat([self.image_input(s) for s in supports])
        masks = torch.cat([self.mask_input(m) for m in support_labels])
        empty = [i for i in range(masks.shape[0]) if not bool(masks[i].any())]
        if empty:
            raise ValueError(f"support masks {empty} hold no object pixel at {IMAGE_SIZE} x {IMAGE_SIZE}")
        dino_query = patch_features(self.dino, normalise_for_dino(query_image))
        dino_supports = patch_features(self.dino, normalise_for_dino(support_images))
        return FssamEncoded(
            query=encode_image(self.sam2, self._sam2_input(query_image)),
            supports=[encode_image(self.sam2, self._sam2_input(s[None])) for s in support_images],
            dino_query=dino_query,
            dino_supports=dino_supports,
            support_masks=masks,
            input_size=(int(query.shape[0]), int(query.shape[1])),
        )

    # -- everything after them --------------------------------------------------------------

    def _memory(self, features: FrameFeatures, mask: torch.Tensor):
        """SAM2's mask-as-output memory of one (1, 1, 512, 512) mask: (bf16 memory (1, 64, 32, 32),
        its position encoding (1, 64, 32, 32), object pointer (1, 256))."""
        decoded = heads.mask_as_output(self.sam2, features, mask)
        memory, pos = heads.encode_memory(self.sam2, features, decoded.high_res_masks,
                                          decoded.object_score_logits, from_prompt=False)
        return memory, pos, decoded.obj_ptr

    @torch.no_grad()
    def infer(self, encoded: FssamEncoded, options: Optional[FssamOptions] = None,
              trace: bool = False) -> FssamOutput:
        """FSSAM after the backbones, with `options` (default: the segmenter's)."""
        options = options or self.options
        model = self.sam2
        stages: dict[str, torch.Tensor] = {}
        size = (IMAGE_SIZE, IMAGE_SIZE)

        priors = pseudo_prompt_priors(encoded.dino_query, encoded.dino_supports, encoded.support_masks,
                                      size, background_prototype=options.background_prototype)

        support_memories = [self._memory(f, encoded.support_masks[i:i + 1]) for i, f in enumerate(encoded.supports)]
        fg_memory, _, fg_ptr = self._memory(encoded.query, priors.fg)
        disc_memory, disc_pos, disc_ptr = self._memory(encoded.query, priors.disc)
        sup_mem = torch.cat([m for m, _, _ in support_memories])
        sup_ptr = torch.cat([p for _, _, p in support_memories])

        grid = encoded.query.feat_sizes[-1]
        sup_mask_grid = F.interpolate(encoded.support_masks, size=grid, mode="bilinear", align_corners=True)
        prior_fg_grid = F.interpolate(priors.fg, size=grid, mode="bilinear", align_corners=True)
        prior_disc_grid = F.interpolate(priors.disc, size=grid, mode="bilinear", align_corners=True)
        refined, refinement = refine_disc_memory(sup_mem, sup_mask_grid, fg_memory, disc_memory,
                                                 prior_fg_grid, prior_disc_grid, options.refinement_iterations)

        # Memory tokens: supports, refined query-Disc, then pointers (4 tokens of 64 each).
        slot_code = model.maskmem_tpos_enc[model.num_maskmem - 1]  # conditioning slot (t_pos 0)
        spatial = [m for m, _, _ in support_memories] + [refined]
        positions = [p for _, p, _ in support_memories] + [disc_pos]
        memory = [m.float().flatten(2).permute(2, 0, 1) for m in spatial]
        memory_pos = [p.flatten(2).permute(2, 0, 1) + slot_code for p in positions]
        pointers = torch.cat([sup_ptr, disc_ptr])[:, None]  # (P, 1, C)
        split = model.hidden_dim // model.mem_dim
        pointers = pointers.reshape(-1, 1, split, model.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
        memory.append(pointers)
        memory_pos.append(torch.zeros_like(pointers))
        calibration_masks = F.interpolate(encoded.support_masks, size=grid, mode="nearest")
        hook = (SupportCalibration(calibration_masks, mode=options.calibration)
                if options.calibration is not None else None)
        attended = heads.attend_memory_tokens(
            model, encoded.query.top(1), encoded.query.top_pos(1),
            torch.cat(memory), torch.cat(memory_pos), pointers.shape[0], hook)
        pix_feat = attended.permute(1, 2, 0).reshape(1, model.hidden_dim, *grid)

        decoded = heads.decode(model, pix_feat, encoded.query.high_res(1), multimask=True,
                               gate_by_object_score=False)
        logits = decoded.high_res_masks
        at_input = F.interpolate(logits, size=encoded.input_size, mode="bilinear", align_corners=True)

        if trace:
            stages.update({
                "dino_query": encoded.dino_query, "dino_support": encoded.dino_supports,
                "sup_mask_prompt": encoded.support_masks,
                "prior_fg_512": priors.fg, "prior_ae_512": priors.disc, "priors_per_shot": priors.per_shot,
                "sup_mem": sup_mem.float(), "qry_fg_mem": fg_memory.float(), "qry_ae_mem_0": disc_memory.float(),
                "mem_pos_enc": disc_pos,
                "sup_obj_ptr": sup_ptr, "qry_fg_obj_ptr": fg_ptr, "qry_ae_obj_ptr": disc_ptr,
                "imr_prior_fg_32": prior_fg_grid, "imr_sup_fg_32": sup_mask_grid,
                "imr_prior_ae_32": torch.stack(refinement.disc_priors),
                "imr_qry_ae_mem": torch.stack([m.float() for m in refinement.disc_memories]),
                "calib_support_mask_32": calibration_masks[:1],
                "mem_attn_out": attended,
                "dec_ious": decoded.ious, "dec_low_res_mask": decoded.low_res_masks,
                "dec_object_score_logits": decoded.object_score_logits, "final_obj_ptr": decoded.obj_ptr,
                "sam2_query_top_feat": encoded.query.vision_feats[-1],
            })
            if refinement.support_similarity is not None:
                stages["imr_prior_mem_qry_sup_fg"] = refinement.support_similarity
                stages["imr_prior_mem_qry_qry_fg"] = torch.stack(refinement.disc_similarities)
            stages["logits_512"] = logits[:, 0]
            stages["logits_input_size"] = at_input[:, 0]
        return FssamOutput(logits=logits, logits_input_size=at_input, low_res_logits=decoded.low_res_masks,
                           ious=decoded.ious, object_score_logits=decoded.object_score_logits, trace=stages)

    def segment(self, query: np.ndarray, supports: Sequence[np.ndarray], support_labels: Sequence[np.ndarray],
                options: Optional[FssamOptions] = None, trace: bool = False) -> FssamOutput:
        """Segment `query` (H, W, 3) uint8 RGB from supports (images + {0, 1, 255} labels)."""
        return self.infer(self.encode(query, supports, support_labels), options, trace)

    def with_options(self, options: FssamOptions) -> "FssamSegmenter":
        """The same networks with other options (shares the modules)."""
        return FssamSegmenter(self.sam2, self.dino, options)
