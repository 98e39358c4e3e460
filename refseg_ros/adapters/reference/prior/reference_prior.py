"""A reference target's prototype prior: where in a frame its examples' features recur.

Teach time: each example (image, mask) is encoded by DINOv2 (`dino_encoder.DinoEncoder`)
and its patch features are masked-average-pooled (`prototypes.masked_average`, FSSAM's
Weighted_GAP) into one foreground prototype (under the mask) and one background
prototype (outside it). Frame time: the raw cosine similarity of every patch of the
frame with every prototype; the foreground map is the maximum over the foreground
prototypes (the best-matching example), the background map likewise.

This is the training-free prototype prior of PFENet-style few-shot segmentation, as
FSSAM's Pseudo Prompt Generator computes it (Xu et al., "Unlocking the Power of SAM 2
for Few-Shot Segmentation", ICML 2025; see `priors.py`), and as CAV-SAM uses DINOv2
prototypes to find a reference object in a target view, with one difference: the maps
here are *raw* cosines, never min-max normalised, so that a frame without the target
gives low values everywhere instead of a peak at its least dissimilar patch.

Masks reach the grid as the fraction of each cell they cover (area averaging), so a mask
smaller than a cell still weighs in; the pooled prototype is scaled by FSSAM's 5e-4 area
offset, which a cosine does not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..prototypes import cosine_map, masked_average
from .dino_encoder import DinoEncoder, as_encoder

# A background prototype needs at least this much of the grid (in cells) outside the mask.
MIN_BACKGROUND_CELLS = 0.5


@dataclass(frozen=True)
class ReferencePrototypes:
    """Prototypes of one reference target.

    foreground: (Nf, C) float32, Nf >= 1, one per example; background: (Nb, C) float32,
    0 <= Nb <= Nf (an example whose mask leaves under half a grid cell uncovered has
    none). CPU tensors; cosines do not depend on their scale.
    """

    foreground: torch.Tensor
    background: torch.Tensor

    def __post_init__(self) -> None:
        fg, bg = self.foreground, self.background
        if fg.ndim != 2 or fg.shape[0] < 1:
            raise ValueError(f"foreground prototypes must be (Nf >= 1, C), got {tuple(fg.shape)}")
        if bg.ndim != 2 or bg.shape[1] != fg.shape[1]:
            raise ValueError(f"background prototypes must be (Nb, {fg.shape[1]}), got {tuple(bg.shape)}")
        if not (torch.isfinite(fg).all() and torch.isfinite(bg).all()):
            raise ValueError("prototypes must be finite")

    @property
    def channels(self) -> int:
        """C, the feature dimension."""
        return int(self.foreground.shape[1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """{"foreground": (Nf, C) float32, "background": (Nb, C) float32}, for np.savez."""
        return {"foreground": self.foreground.detach().cpu().float().numpy().copy(),
                "background": self.background.detach().cpu().float().numpy().copy()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ReferencePrototypes":
        """The inverse of `to_arrays` (any mapping with those two keys, e.g. an NpzFile).

        Raises KeyError for a missing key, ValueError for shapes that do not fit or
        values that are not finite.
        """
        fg = torch.as_tensor(np.asarray(arrays["foreground"], dtype=np.float32))
        bg = torch.as_tensor(np.asarray(arrays["background"], dtype=np.float32))
        if bg.ndim == 1 and bg.numel() == 0:
            bg = bg.reshape(0, fg.shape[-1] if fg.ndim == 2 else 0)
        return cls(fg.clone(), bg.clone())


def mask_to_grid(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) mask (nonzero = object) -> (1, 1, h, w) float32: the fraction of each grid
    cell the mask covers (area averaging)."""
    tensor = torch.as_tensor(np.asarray(mask) != 0, dtype=torch.float32)[None, None]
    return F.adaptive_avg_pool2d(tensor, grid)


def prototypes_from_features(features: torch.Tensor, weights: torch.Tensor) -> ReferencePrototypes:
    """Masked average pooling of N examples' feature maps.

    features: (N, C, h, w) float; weights: (N, 1, h, w) float in [0, 1], each example's
    mask on the grid. Foreground n = sum(f m) / (sum(m) + 5e-4); background n the same
    with 1 - m, left out when sum(1 - m) < MIN_BACKGROUND_CELLS. Raises ValueError for
    mismatched shapes or an example whose mask is empty on the grid.
    """
    if features.ndim != 4 or weights.ndim != 4 or weights.shape[1] != 1 \
            or features.shape[0] != weights.shape[0] or features.shape[-2:] != weights.shape[-2:]:
        raise ValueError(f"features (N, C, h, w) and weights (N, 1, h, w) expected, got "
                         f"{tuple(features.shape)} and {tuple(weights.shape)}")
    features, weights = features.float(), weights.float().to(features.device)
    empty = [i for i in range(weights.shape[0]) if float(weights[i].sum()) <= 0.0]
    if empty:
        raise ValueError(f"examples {empty} have an empty mask")
    foreground = masked_average(features, weights).flatten(1)
    outside = 1.0 - weights
    keep = [i for i in range(weights.shape[0]) if float(outside[i].sum()) >= MIN_BACKGROUND_CELLS]
    background = masked_average(features[keep], outside[keep]).flatten(1) if keep \
        else features.new_zeros(0, features.shape[1])
    return ReferencePrototypes(foreground.cpu(), background.cpu())


def prototypes_from_examples(encoder: DinoEncoder | torch.nn.Module, images: Sequence[np.ndarray],
                             masks: Sequence[np.ndarray]) -> ReferencePrototypes:
    """Prototypes of a target taught by examples (teach time; one DINOv2 pass per example).

    images: (H_i, W_i, 3) uint8 RGB; masks: (H_i, W_i) bool (nonzero = object), one per
    image, sizes may differ between examples. encoder: a DinoEncoder, or a Dinov2Model
    wrapped with its default input size. Raises ValueError for no examples, a count or
    size mismatch, a bad image, or a mask that is empty.
    """
    if len(images) == 0 or len(images) != len(masks):
        raise ValueError(f"{len(images)} example images for {len(masks)} masks (need >= 1 of each)")
    encoder = as_encoder(encoder)
    feats, weights = [], []
    for i, (image, mask) in enumerate(zip(images, masks)):
        mask = np.asarray(mask)
        if mask.shape != tuple(np.shape(image)[:2]):
            raise ValueError(f"example {i}: mask {mask.shape} for an image of {tuple(np.shape(image)[:2])}")
        if not mask.any():
            raise ValueError(f"example {i}: the mask is empty")
        feats.append(encoder(image))
        weights.append(mask_to_grid(mask, encoder.grid_size))
    return prototypes_from_features(torch.cat(feats), torch.cat(weights))


def cosine_maps(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Raw cosine of every position with every prototype: features (1, C, h, w),
    prototypes (N, C) -> (N, h, w) float32 in [-1, 1] (`prototypes.cosine_map`)."""
    count = prototypes.shape[0]
    _, channels, height, width = features.shape
    protos = prototypes.to(features.device, torch.float32).view(count, channels, 1, 1)
    maps = cosine_map(features.float().expand(count, -1, -1, -1), protos)
    return maps.view(count, height, width)


@dataclass
class PriorMaps:
    """One frame against one target: foreground (h, w) float32, the highest raw cosine
    with any foreground prototype; background (h, w) float32, the same over background
    prototypes, or None when the target has none."""

    foreground: torch.Tensor
    background: Optional[torch.Tensor]


def prior_maps(features: torch.Tensor, prototypes: ReferencePrototypes) -> PriorMaps:
    """Both maps of a frame's features (1, C, h, w). Raises ValueError when C differs
    from the prototypes' (another encoder taught them)."""
    if features.shape[1] != prototypes.channels:
        raise ValueError(f"features of {features.shape[1]} channels against prototypes of "
                         f"{prototypes.channels}: the target was taught with another encoder")
    fg = cosine_maps(features, prototypes.foreground).amax(0)
    bg = cosine_maps(features, prototypes.background).amax(0) if prototypes.background.shape[0] else None
    return PriorMaps(fg, bg)


def similarity_map(encoder: DinoEncoder | torch.nn.Module, frame: np.ndarray,
                   prototypes: ReferencePrototypes) -> torch.Tensor:
    """The frame's foreground map: (H, W, 3) uint8 RGB -> (h, w) float32 raw cosine, on
    the encoder's grid (one DINOv2 pass)."""
    return prior_maps(as_encoder(encoder)(frame), prototypes).foreground
