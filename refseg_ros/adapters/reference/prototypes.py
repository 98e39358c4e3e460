"""Masked-average prototypes and cosine maps: the arithmetic FSSAM's modules share.

One masked average (FSSAM's `Weighted_GAP`) serves the Pseudo Prompt Generator (on DINOv2
features), Iterative Memory Refinement (on SAM2 memories) and the Support-Calibrated
Memory Attention (on projected keys). The release's calibration calls a method of that
name that it never defines; the parity fixtures bind it to this same function, and so do
we (`../shared/fixtures/fssam/README.md`, patch 4).
"""

from __future__ import annotations

import torch

MASKED_AVERAGE_EPS = 5e-4  # FSSAM's area offset: sum(f m) / (sum(m) + 0.0005)
COSINE_EPS = 1e-7  # added to the norm product and to min-max ranges


def masked_average(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked average pooling: (N, C, h, w) features, (N, 1, h, w) float weights -> (N, C, 1, 1).

    sum(f * m) / (sum(m) + 5e-4), computed as FSSAM does: means over the h*w positions
    multiplied back by h*w (float32).
    """
    area = features.shape[-2] * features.shape[-1]
    weighted = (features * mask).mean(dim=(-2, -1), keepdim=True) * area
    return weighted / (mask.mean(dim=(-2, -1), keepdim=True) * area + MASKED_AVERAGE_EPS)


def cosine_map(features: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every position with a prototype.

    features (B, C, h, w), prototype (B, C, 1, 1) -> (B, h*w) float32, with 1e-7 added
    to the product of norms (FSSAM's `cos_sim`).
    """
    tokens = features.flatten(2)  # (B, C, hw)
    proto = prototype.flatten(2).transpose(-2, -1)  # (B, 1, C)
    token_norm = torch.norm(tokens, 2, 1, True)  # (B, 1, hw)
    proto_norm = torch.norm(proto, 2, 2, True)  # (B, 1, 1)
    similarity = (proto @ tokens) / (proto_norm @ token_norm + COSINE_EPS)
    return similarity[:, 0]


def min_max(values: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """Min-max normalise along the last dimension: (x - min) / (max - min + eps)."""
    low = values.min(-1, keepdim=True)[0]
    high = values.max(-1, keepdim=True)[0]
    return (values - low) / (high - low + eps)


def normalised_similarity(features: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
    """min_max(cosine_map(...)) reshaped to the map: (B, C, h, w), (B, C, 1, 1) -> (B, 1, h, w)."""
    batch, _, height, width = features.shape
    return min_max(cosine_map(features, prototype)).view(batch, 1, height, width)
