"""Augmented views of a reference example for test-time geometric alignment (TTGA).

CAV-SAM ("Correspondence as Video", Wang et al., ICCV 2025, arXiv 2508.07759; its
Test-Time Geometric Alignment module, TTGA) tunes SAM2 on views of the reference that
move and recolour the object, so that the tuned features follow the object across the
geometric and photometric changes between a reference and the frames it is looked for
in. A view here is one random draw of

- photometric jitter: brightness, contrast and saturation factors in [1 - J, 1 + J]
  (J = `PhotometricRange.jitter`, 0.3) and a hue rotation in [-0.05, 0.05] of a turn,
  applied in this order to the image only (the hue is rotated in YIQ space, a linear
  3 x 3 map: an HSV round trip costs about ten times the rest of a view on a CPU);
- an affine warp about the image centre: rotation in [-20, 20] degrees, isotropic scale
  in [0.75, 1.25], translation up to 10 % of the side each way, and a horizontal flip
  with probability 0.5; the image is resampled bilinearly (outside pixels black), the
  mask by nearest neighbour (outside pixels background).

The paper does not list its augmentation ranges; these are this package's choice, wide
enough to move the object by several feature cells at stride 16 and mild enough to keep
it recognisable. A draw whose warped mask is empty (the object pushed out of the view)
is drawn again, up to `MAX_DRAWS` times, and then falls back to the photometric change
alone, so every view shows the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_DRAWS = 10  # draws per view before falling back to no warp


@dataclass(frozen=True)
class PhotometricRange:
    """Colour jitter: factors in [1 - jitter, 1 + jitter], hue shift in [-hue, hue] turns."""

    jitter: float = 0.3
    hue: float = 0.05


@dataclass(frozen=True)
class AffineRange:
    """Warp: rotation in [-degrees, degrees], scale in [1 - scale, 1 + scale], translation
    up to `translate` of the side each way, horizontal flip with probability `flip`."""

    degrees: float = 20.0
    scale: float = 0.25
    translate: float = 0.1
    flip: float = 0.5


# RGB -> YIQ (NTSC); the inverse is computed once per device and dtype.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def rotate_hue(image: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the hue of a (3, H, W) float RGB image in [0, 1] by `turns` of a full turn
    (chroma rotated about the luma axis in YIQ space); returns it clamped to [0, 1]."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    angle = 2.0 * torch.pi * turns
    c, s = float(torch.cos(torch.tensor(angle))), float(torch.sin(torch.tensor(angle)))
    rotation = torch.tensor(((1.0, 0.0, 0.0), (0.0, c, -s), (0.0, s, c)), dtype=torch.float64)
    matrix = (torch.linalg.inv(to_yiq) @ rotation @ to_yiq).to(image.device, image.dtype)
    return torch.einsum("ij,jhw->ihw", matrix, image).clamp(0.0, 1.0)


def augment_views(image: torch.Tensor, mask: torch.Tensor, n: int, generator: torch.Generator,
                  photometric: PhotometricRange = PhotometricRange(),
                  affine: AffineRange = AffineRange()) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` random views of one example (see the module docstring for what a view is).

    image: (3, H, W) float32 RGB in [0, 1]; mask: (H, W) bool (or any dtype, nonzero =
    object), on the image's device; generator: a CPU `torch.Generator` that draws every
    random parameter, so a seeded generator gives the same views. Returns n pairs
    (view (3, H, W) float32 in [0, 1], view mask (H, W) bool), on the image's device.

    Raises ValueError for mismatched shapes, n < 0 or an empty mask.
    """
    from torchvision.transforms.v2 import functional as TF
    from torchvision.transforms.v2 import InterpolationMode

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if mask.shape != image.shape[1:]:
        raise ValueError(f"mask must be (H, W) = {tuple(image.shape[1:])}, got {tuple(mask.shape)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("the example's mask is empty: there is no object to augment")
    height, width = mask.shape
    views = []
    for _ in range(n):
        u = torch.rand(8, generator=generator).tolist()
        jitter = photometric.jitter
        view = TF.adjust_brightness(image, 1.0 + jitter * (2 * u[0] - 1))
        view = TF.adjust_contrast(view, 1.0 + jitter * (2 * u[1] - 1))
        view = TF.adjust_saturation(view, 1.0 + jitter * (2 * u[2] - 1))
        view = rotate_hue(view, photometric.hue * (2 * u[3] - 1))
        warped = None
        for _ in range(MAX_DRAWS):
            g = torch.rand(5, generator=generator).tolist()
            angle = affine.degrees * (2 * g[0] - 1)
            scale = 1.0 + affine.scale * (2 * g[1] - 1)
            shift = [round(affine.translate * width * (2 * g[2] - 1)),
                     round(affine.translate * height * (2 * g[3] - 1))]
            flip = g[4] < affine.flip
            m = mask[None].to(torch.uint8)
            v = view
            if flip:
                v, m = TF.horizontal_flip(v), TF.horizontal_flip(m)
            m = TF.affine(m, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                          interpolation=InterpolationMode.NEAREST, fill=0)[0].bool()
            if bool(m.any()):
                v = TF.affine(v, angle=angle, translate=shift, scale=scale, shear=[0.0, 0.0],
                              interpolation=InterpolationMode.BILINEAR, fill=0.0)
                warped = (v.clamp(0.0, 1.0), m)
                break
        views.append(warped if warped is not None else (view, mask.clone()))
    return views
