"""Turn user prompts into model inputs, rejecting the ones that cannot mean anything.

A prompt is checked twice over: on its own image (empty, malformed, outside), and at the
model's resolution, where a prompt that was fine on a 1920x1080 image may be nothing at
all. Prompts that vanish or degenerate there are refused with
`PromptBelowResolutionError`; none is quietly enlarged or turned into another kind of
prompt, since the target would then be something the user did not draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidPromptError, PromptBelowResolutionError
from .types import BoxPrompt, MaskPrompt, PointsPrompt, Prompt

BOX_LABELS = (2, 3)  # SAM2 encodes a box as two corner points with these labels
# SAM2 takes a mask prompt at a quarter of the input size a side: the prompt encoder's
# mask_input_size, and the low-resolution output that `_use_mask_as_output` makes of it
# (from which the prompt frame's memory is encoded).
MASK_PROMPT_STRIDE = 4
# A solid region this many mask-prompt cells a side survives the scaling wherever it lies
# (tested at every offset across two cells, in test_engine_api); refusals quote it as the
# size needed. One cell alone does not: a 4x4-pixel square off the cell grid vanishes.
CELLS_ALWAYS_KEPT = 2
# SAM2's logits for a mask prompt used as output: pixel * 20 - 10 (see _use_mask_as_output).
_MASK_OUT_SCALE, _MASK_OUT_BIAS = 20.0, -10.0


@dataclass
class PromptInputs:
    """A prompt in the model's input frame: a binary mask, or labelled points."""

    mask: Optional[torch.Tensor] = None  # (1, 1, S, S) float {0, 1}
    points: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (1, N, 2), (1, N)


def check_prompt(prompt: Prompt, height: Optional[int] = None, width: Optional[int] = None,
                 image_size: Optional[int] = None) -> None:
    """Reject prompts that are empty, malformed or outside an H x W frame (pixels), and,
    given the model's `image_size` (pixels a side), those that vanish or degenerate once
    scaled to it.

    Without a frame size (no frame seen yet) only the size-free checks run; a mask carries
    its own size, so its scaling is checked even then.

    At the model's resolution (`image_size` S, the frame scaled to S x S as SAM2 does):
    - a mask is scaled to S x S (antialiased bilinear, kept where >= 0.5) and then to
      SAM2's S/4 x S/4 mask prompt, exactly as the model does; it must keep at least
      one pixel at both. The refusal names the pixels the mask covers and the size of a
      solid region that always survives: 2 x 2 cells of the mask prompt, i.e.
      ceil(2 * 4 * W / S) x ceil(2 * 4 * H / S) image pixels;
    - a box, clipped to the frame, must span at least one model pixel each way, i.e.
      W / S x H / S image pixels;
    - an object click (label 1) and a background click (label 0) must lie at least one
      model pixel apart; closer, they say opposite things about the same pixel.

    Raises InvalidPromptError for a bad prompt, and its subclass
    PromptBelowResolutionError for one that is fine on its image but not at the model's
    resolution.
    """
    _check_on_image(prompt, height, width)
    if image_size is not None:
        _check_at_model_size(prompt, height, width, image_size)


def _check_on_image(prompt: Prompt, height: Optional[int], width: Optional[int]) -> None:
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
            raise InvalidPromptError(
                f"points {pts[~inside].tolist()} lie outside the image{_size(height, width)}")
    else:
        raise InvalidPromptError(f"unknown prompt type {type(prompt).__name__}")


def _size(height: Optional[int], width: Optional[int]) -> str:
    return f" ({width}x{height})" if height is not None and width is not None else ""


def _check_at_model_size(prompt: Prompt, height: Optional[int], width: Optional[int],
                         image_size: int, model_mask: Optional[torch.Tensor] = None) -> None:
    """The model-resolution half of check_prompt; `model_mask` saves scaling it again."""
    if isinstance(prompt, MaskPrompt):
        mask = np.asarray(prompt.mask)
        if model_mask is None:
            model_mask = scale_mask(mask, image_size, torch.device("cpu"))
        _check_mask_scale(mask, model_mask, image_size)
        return
    if height is None or width is None:
        return
    sx, sy = image_size / width, image_size / height  # model pixels per image pixel
    one_pixel = f"{_num(width / image_size)}x{_num(height / image_size)} image pixels"
    if isinstance(prompt, BoxPrompt):
        x0, y0, x1, y1 = (float(v) for v in prompt.box)
        cx0, cx1 = max(x0, 0.0), min(x1, float(width))
        cy0, cy1 = max(y0, 0.0), min(y1, float(height))
        w, h = cx1 - cx0, cy1 - cy0
        if w * sx < 1.0 or h * sy < 1.0:
            clipped = " (inside it)" if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1) else ""
            raise PromptBelowResolutionError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) spans {w:g}x{h:g} pixels of the {width}x{height} "
                f"image{clipped}, {w * sx:.2f}x{h * sy:.2f} pixels at the model's {image_size}x{image_size} "
                f"input (image_size {image_size}); a box needs at least one model pixel each way, "
                f"here {one_pixel}")
    elif isinstance(prompt, PointsPrompt):
        pts = np.asarray(prompt.points, dtype=np.float64)
        labels = np.asarray(prompt.labels)
        scaled = pts * (sx, sy)
        for i in np.flatnonzero(labels == 1):
            gaps = np.hypot(*(scaled[labels == 0] - scaled[i]).T)
            if gaps.size and gaps.min() < 1.0:
                j = np.flatnonzero(labels == 0)[int(gaps.argmin())]
                raise PromptBelowResolutionError(
                    f"object point ({pts[i, 0]:g}, {pts[i, 1]:g}) and background point "
                    f"({pts[j, 0]:g}, {pts[j, 1]:g}) of the {width}x{height} image are {gaps.min():.2f} "
                    f"model pixels apart at the model's {image_size}x{image_size} input (image_size "
                    f"{image_size}); they must lie at least one model pixel apart, here {one_pixel}")


def _check_mask_scale(mask: np.ndarray, model_mask: torch.Tensor, image_size: int) -> None:
    """Refuse a mask that is empty at the S x S input or at SAM2's S/4 x S/4 mask prompt."""
    cells = image_size // MASK_PROMPT_STRIDE
    if not bool(model_mask.any()):
        where = f"is empty at the model's {image_size}x{image_size} input"
    elif not bool(mask_prompt_cells(model_mask).any()):
        where = (f"vanishes from SAM2's {cells}x{cells} mask prompt (image_size {image_size} / "
                 f"{MASK_PROMPT_STRIDE})")
    else:
        return
    height, width = mask.shape
    nonzero = mask != 0
    rows, cols = np.flatnonzero(nonzero.any(axis=1)), np.flatnonzero(nonzero.any(axis=0))
    count = int(nonzero.sum())
    need_w = math.ceil(CELLS_ALWAYS_KEPT * width / cells)
    need_h = math.ceil(CELLS_ALWAYS_KEPT * height / cells)
    raise PromptBelowResolutionError(
        f"mask covers {count} pixel{'s' if count != 1 else ''} (a {cols[-1] - cols[0] + 1}x"
        f"{rows[-1] - rows[0] + 1} box) of the {width}x{height} image and {where}: at image_size "
        f"{image_size} one cell of the {cells}x{cells} mask prompt spans {_num(width / cells)}x"
        f"{_num(height / cells)} image pixels; a solid region of at least {need_w}x{need_h} pixels "
        f"always survives")


def _num(value: float) -> str:
    return f"{value:.3g}"


def scale_mask(mask: np.ndarray, image_size: int, device: torch.device) -> torch.Tensor:
    """A binary H x W mask at the model's input, (1, 1, S, S) float {0, 1}, as SAM2's
    predictor scales it: antialiased bilinear, then kept where >= 0.5."""
    model_mask = torch.as_tensor(np.asarray(mask) != 0, device=device)[None, None].float()
    if model_mask.shape[-2:] != (image_size, image_size):
        model_mask = F.interpolate(model_mask, size=(image_size, image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        model_mask = (model_mask >= 0.5).float()
    return model_mask


def mask_prompt_cells(model_mask: torch.Tensor) -> torch.Tensor:
    """The cells of SAM2's S/4 x S/4 mask prompt a (1, 1, S, S) mask keeps (bool).

    The arithmetic of SAM2's `_use_mask_as_output` (logits pixel * 20 - 10, antialiased
    bilinear to S/4): a cell is kept when its logit is positive, i.e. when the mask
    fills more than half of the cell's (weighted) footprint.
    """
    size = model_mask.shape[-1] // MASK_PROMPT_STRIDE
    logits = F.interpolate(model_mask * _MASK_OUT_SCALE + _MASK_OUT_BIAS, size=(size, size),
                           mode="bilinear", align_corners=False, antialias=True)
    return logits > 0


def to_model_inputs(prompt: Prompt, height: int, width: int, image_size: int,
                    device: torch.device) -> PromptInputs:
    """Scale a prompt on an H x W frame (pixels) to the model's S x S input, as SAM2's
    predictor does.

    Checks the prompt first, the way check_prompt does with `image_size`; a mask is
    scaled once, on `device`, and that very mask is the one checked. Raises
    InvalidPromptError (PromptBelowResolutionError for a prompt that vanishes or
    degenerates at the model's resolution).
    """
    _check_on_image(prompt, height, width)
    if isinstance(prompt, MaskPrompt):
        mask = scale_mask(prompt.mask, image_size, device)
        _check_at_model_size(prompt, height, width, image_size, model_mask=mask)
        return PromptInputs(mask=mask)
    _check_at_model_size(prompt, height, width, image_size)
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
