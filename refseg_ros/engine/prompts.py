"""Turn user prompts into model inputs, rejecting the ones that cannot mean anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidPromptError
from .types import BoxPrompt, MaskPrompt, PointsPrompt, Prompt

BOX_LABELS = (2, 3)  # SAM2 encodes a box as two corner points with these labels


@dataclass
class PromptInputs:
    """A prompt in the model's input frame: a binary mask, or labelled points."""

    mask: Optional[torch.Tensor] = None  # (1, 1, S, S) float {0, 1}
    points: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (1, N, 2), (1, N)


def check_prompt(prompt: Prompt, height: Optional[int] = None, width: Optional[int] = None) -> None:
    """Reject prompts that are empty, malformed or outside an H x W frame.

    Without a frame size (no frame seen yet) only the size-free checks run.
    """
    sized = height is not None and width is not None
    if isinstance(prompt, MaskPrompt):
        mask = np.asarray(prompt.mask)
        if mask.ndim != 2:
            raise InvalidPromptError(f"mask must be 2-D, got shape {mask.shape}")
        if sized and mask.shape != (height, width):
            raise InvalidPromptError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}"
            )
        if not mask.any():
            raise InvalidPromptError("mask is empty (all zero): nothing to segment")
    elif isinstance(prompt, BoxPrompt):
        box = np.asarray(prompt.box, dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise InvalidPromptError(f"box must be 4 finite numbers x0, y0, x1, y1; got {prompt.box}")
        x0, y0, x1, y1 = box
        shown = f"({x0:g}, {y0:g}, {x1:g}, {y1:g})"
        if x1 <= x0 or y1 <= y0:
            raise InvalidPromptError(f"box {shown} is empty (needs x1 > x0 and y1 > y0)")
        if x1 <= 0 or y1 <= 0 or (sized and (x0 >= width or y0 >= height)):
            raise InvalidPromptError(f"box {shown} lies outside the image{_size(height, width)}")
    elif isinstance(prompt, PointsPrompt):
        pts = np.asarray(prompt.points, dtype=np.float64)
        labels = np.asarray(prompt.labels)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise InvalidPromptError(f"points must be N x 2 with N >= 1, got shape {pts.shape}")
        if labels.shape != (len(pts),):
            raise InvalidPromptError(f"need one label per point: {len(pts)} points, labels {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise InvalidPromptError("point labels must be 1 (object) or 0 (background)")
        if not (labels == 1).any():
            raise InvalidPromptError("at least one point must be labelled 1 (object)")
        inside = (pts[:, 0] >= 0) & (pts[:, 1] >= 0)
        if sized:
            inside &= (pts[:, 0] < width) & (pts[:, 1] < height)
        if not inside.all():
            raise InvalidPromptError(f"points {pts[~inside].tolist()} lie outside the image{_size(height, width)}")
    else:
        raise InvalidPromptError(f"unknown prompt type {type(prompt).__name__}")


def _size(height: Optional[int], width: Optional[int]) -> str:
    return f" ({width}x{height})" if height is not None and width is not None else ""


def to_model_inputs(prompt: Prompt, height: int, width: int, image_size: int,
                    device: torch.device) -> PromptInputs:
    """Scale a checked prompt to the model's square input, as SAM2's predictor does."""
    check_prompt(prompt, height, width)
    if isinstance(prompt, MaskPrompt):
        mask = torch.as_tensor(np.asarray(prompt.mask) != 0, device=device)[None, None].float()
        if mask.shape[-2:] != (image_size, image_size):
            mask = F.interpolate(mask, size=(image_size, image_size), mode="bilinear",
                                 align_corners=False, antialias=True)
            mask = (mask >= 0.5).float()
        return PromptInputs(mask=mask)
    if isinstance(prompt, BoxPrompt):
        x0, y0, x1, y1 = (float(v) for v in prompt.box)
        x0, x1 = max(x0, 0.0), min(x1, float(width))
        y0, y1 = max(y0, 0.0), min(y1, float(height))
        coords = torch.tensor([[x0, y0], [x1, y1]], dtype=torch.float32)
        labels = torch.tensor(BOX_LABELS, dtype=torch.int32)
    else:
        coords = torch.as_tensor(np.asarray(prompt.points), dtype=torch.float32)
        labels = torch.as_tensor(np.asarray(prompt.labels), dtype=torch.int32)
    coords = coords / torch.tensor([width, height]) * image_size
    return PromptInputs(points=(coords[None].to(device), labels[None].to(device)))
