"""FSSAM's Pseudo Prompt Generator: DINOv2 foreground and discriminative priors.

Paper: Xu et al., "Unlocking the Power of SAM 2 for Few-Shot Segmentation" (ICML 2025),
Pseudo Prompt Generator. For each support shot s, on the 40 x 40 DINOv2 grid:
  fg_s  = min-max(cos(query, masked_average(support_s, m_s)))       (foreground prior)
  bg_s  = min-max(cos(query, masked_average(support_s, 1 - m_s)))   (background)
both upsampled to the model's S x S (bilinear, align_corners=True), then
  disc_s = min-max(ReLU(fg_s - bg_s))  over the S x S positions     (discriminative prior).
Several shots: each shot is normalised on its own, then fg and disc are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..prototypes import masked_average, min_max, normalised_similarity


@dataclass
class Priors:
    """Priors for one query: `fg` and `disc` (1, 1, S, S) float32 in [0, 1];
    `per_shot` (1, shots, 2, S, S) holds [fg_s, disc_s] before the mean over shots."""

    fg: torch.Tensor
    disc: torch.Tensor
    per_shot: torch.Tensor


def pseudo_prompt_priors(
    query_features: torch.Tensor,
    support_features: torch.Tensor,
    support_masks: torch.Tensor,
    size: tuple[int, int],
    background_prototype: bool = True,
) -> Priors:
    """Foreground and discriminative priors of one query.

    query_features (1, C, h, w) and support_features (shots, C, h, w): DINOv2 patch
    features (float32). support_masks (shots, 1, S, S) float {0, 1} at the model's input
    size (ignore pixels already 0). size: the output (S, S).
    `background_prototype=False` leaves the background prototype out (bg = 0, so disc is
    the normalised fg): an ablation, not FSSAM.
    """
    fg_prototypes, bg_prototypes = shot_prototypes(support_features, support_masks)
    return priors_from_prototypes(query_features, fg_prototypes, bg_prototypes if background_prototype else None,
                                  size)


def shot_prototypes(support_features: torch.Tensor,
                    support_masks: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each shot's foreground and background prototypes (FSSAM's Pseudo Prompt Generator,
    support half): the masked averages of its DINOv2 patch features.

    support_features (shots, C, h, w) float32; support_masks (shots, 1, S, S) float {0, 1},
    resized bilinearly (align_corners) to the feature grid. Returns two lists of `shots`
    prototypes, each (1, C, 1, 1) as `prototypes.masked_average` gives them.
    """
    grid = support_features.shape[-2:]
    fg_prototypes, bg_prototypes = [], []
    for shot in range(support_features.shape[0]):
        features = support_features[shot:shot + 1]
        mask = F.interpolate(support_masks[shot:shot + 1], size=grid, mode="bilinear", align_corners=True)
        fg_prototypes.append(masked_average(features, mask))
        bg_prototypes.append(masked_average(features, 1 - mask))
    return fg_prototypes, bg_prototypes


def priors_from_prototypes(query_features: torch.Tensor, fg_prototypes: Sequence[torch.Tensor],
                           bg_prototypes: Optional[Sequence[torch.Tensor]], size: tuple[int, int]) -> Priors:
    """The priors from per-shot prototypes (the second half of `pseudo_prompt_priors`,
    usable with prototypes stored at teach time).

    query_features (1, C, h, w) float32; fg_prototypes / bg_prototypes: one (1, C, 1, 1)
    float32 per shot, bg None without the background prototype (the ablation); size: the
    output (S, S).
    """
    fg_maps, disc_maps = [], []
    for shot, fg_prototype in enumerate(fg_prototypes):
        fg = normalised_similarity(query_features, fg_prototype)
        fg = F.interpolate(fg, size=size, mode="bilinear", align_corners=True)
        if bg_prototypes is not None:
            bg = normalised_similarity(query_features, bg_prototypes[shot])
            bg = F.interpolate(bg, size=size, mode="bilinear", align_corners=True)
            disc = (fg - bg).clamp_min(0)
        else:
            disc = fg.clamp_min(0)
        disc = min_max(disc.flatten(1)).view_as(fg)
        fg_maps.append(fg)
        disc_maps.append(disc)
    fg_all = torch.cat(fg_maps, dim=1)  # (1, shots, S, S)
    disc_all = torch.cat(disc_maps, dim=1)
    return Priors(
        fg=fg_all.mean(1, keepdim=True),
        disc=disc_all.mean(1, keepdim=True),
        per_shot=torch.stack([fg_all, disc_all], dim=2),
    )
