"""Candidate masks for a reference target: one batched SAM2 decode, then a score each.

`decode_candidates` turns k candidate points (frame pixels) into k masks with ONE call of
`engine.heads.decode`, batch k, one positive click per row, on the frame's existing image
embedding (`FrameFeatures` from the engine's own encoder pass, decoded without memory as
SAM2 decodes a prompt frame). Each row is what the engine's own prompt path
(`to_model_inputs` + `heads.decode` with SAM2's multimask rule for one click) gives for
that click alone.

`score_candidates` scores each mask and says why it is refused, if it is:

    score = similarity * clamp(iou, 0, 1) ** iou_weight * sigmoid(object_logit) ** object_weight

- similarity: the raw foreground cosine (`reference_prior.PriorMaps.foreground`)
  averaged over the mask, the mask taken to the prior's grid as cell coverage; in
  [-1, 1]. It says whether the masked region looks like the examples;
- iou: SAM2's predicted IoU of the chosen mask, object_logit: SAM2's object score. Both
  say whether SAM2 sees one whole object there; with the default weights (1/2 each) they
  enter as a geometric mean, so a confident SAM2 leaves the similarity almost as it is
  and an unsure one pulls it down. A negative similarity stays negative.

Refusals (absence is a valid answer; no candidate may stand for "everything"):
- "absent": SAM2's object score logit <= 0 (its mask is then replaced by -1024 anyway);
- "empty": the mask (low-resolution logits > 0) covers less than `min_area_fraction` of
  the frame (default 0.1 %, e.g. about 17 x 17 pixels of a 640 x 480 frame) or nothing;
- "full frame": it covers more than `max_area_fraction` (default 80 %) of the frame:
  such a mask is background or the whole view, not an object to re-acquire;
- "point outside": the clicked point is not inside its own mask (SAM2 answered with
  another region, e.g. the complement of the object).
Areas are measured on the (S/4 x S/4) low-resolution mask, which spans the whole frame.

The scoring and refusal rules are this project's own design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures


@dataclass
class Candidates:
    """k decoded candidates on one frame, in the order of their points.

    points_xy: (k, 2) float32 frame pixels (x, y); low_res: (k, 1, S/4, S/4) float32
    logits; iou: (k,) float32, SAM2's predicted IoU of each chosen mask; object_score_logits:
    (k,) float32; obj_ptr: (k, C) object pointers (what a conditioning memory stores).
    Tensors stay on the model's device.
    """

    points_xy: np.ndarray
    low_res: torch.Tensor
    iou: torch.Tensor
    object_score_logits: torch.Tensor
    obj_ptr: torch.Tensor

    def __len__(self) -> int:
        return int(self.low_res.shape[0])


def single_click_multimask(model: torch.nn.Module) -> bool:
    """SAM2's rule for one click: three masks, the one with the best predicted IoU kept."""
    return bool(model.multimask_output_in_sam
                and model.multimask_min_pt_num <= 1 <= model.multimask_max_pt_num)


def points_to_model(points_xy: np.ndarray, frame_hw: tuple[int, int], image_size: int,
                    device: torch.device) -> torch.Tensor:
    """(k, 2) frame pixels -> (k, 1, 2) float32 model-input pixels, as `to_model_inputs`
    scales clicks: x / W * S, y / H * S."""
    height, width = frame_hw
    coords = torch.as_tensor(np.asarray(points_xy, dtype=np.float32))
    coords = coords / torch.tensor([width, height]) * image_size
    return coords[:, None].to(device)


def decode_candidates(model: torch.nn.Module, features: FrameFeatures, points_xy: np.ndarray,
                      frame_hw: tuple[int, int], image_size: Optional[int] = None,
                      multimask: Optional[bool] = None) -> Candidates:
    """One batched decode of k single positive clicks on a frame's features.

    model: the engine's SAM2; features: the frame's FrameFeatures (no encoder pass
    here); points_xy: (k, 2) float frame pixels, k >= 1, inside the H x W frame
    (frame_hw = (H, W)); image_size: S, default model.image_size; multimask: default
    SAM2's one-click rule (`single_click_multimask`). Raises ValueError for points that
    are not (k >= 1, 2), not finite or outside the frame.
    """
    points = np.asarray(points_xy, dtype=np.float64)
    height, width = frame_hw
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ValueError(f"candidate points must be finite (k >= 1, 2), got shape {points.shape}")
    outside = (points[:, 0] < 0) | (points[:, 1] < 0) | (points[:, 0] >= width) | (points[:, 1] >= height)
    if outside.any():
        raise ValueError(f"candidate points {points[outside].tolist()} lie outside the {width}x{height} frame")
    size = int(image_size if image_size is not None else model.image_size)
    multimask = single_click_multimask(model) if multimask is None else multimask
    batch = points.shape[0]
    device = features.vision_feats[-1].device
    coords = points_to_model(points, frame_hw, size, device)
    labels = torch.ones(batch, 1, dtype=torch.int32, device=device)
    decoded = heads.decode(model, heads.without_memory(model, features, batch), features.high_res(batch),
                           points=(coords, labels), multimask=multimask)
    ious = decoded.ious.float()
    if ious.shape[1] > 1:  # decode kept the row's best mask; report that mask's IoU
        iou = ious.max(dim=1).values
    else:
        iou = ious[:, 0]
    return Candidates(points.astype(np.float32), decoded.low_res_masks.float(), iou,
                      decoded.object_score_logits.float().flatten(), decoded.obj_ptr)


@dataclass(frozen=True)
class ScoringRules:
    """How candidates are scored and refused (see the module docstring).

    iou_weight, object_weight: exponents >= 0 of SAM2's clamped IoU and object
    probability; min_area_fraction, max_area_fraction: the mask's share of the frame
    allowed, 0 <= min < max <= 1; require_point_inside: refuse a mask that does not
    contain its click.
    """

    iou_weight: float = 0.5
    object_weight: float = 0.5
    min_area_fraction: float = 1e-3
    max_area_fraction: float = 0.8
    require_point_inside: bool = True

    def __post_init__(self) -> None:
        if self.iou_weight < 0 or self.object_weight < 0:
            raise ValueError("score weights must be >= 0")
        if not 0.0 <= self.min_area_fraction < self.max_area_fraction <= 1.0:
            raise ValueError(f"need 0 <= min_area_fraction < max_area_fraction <= 1, got "
                             f"{self.min_area_fraction}, {self.max_area_fraction}")


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's verdict: score (nan for an empty mask), its parts, the mask's
    share of the frame (0..1) and the reason it is refused (None when it may be
    accepted)."""

    index: int
    score: float
    similarity: float
    iou: float
    object_probability: float
    area_fraction: float
    refused: Optional[str]

    @property
    def valid(self) -> bool:
        """True when no rule refuses the candidate (it may still score below threshold)."""
        return self.refused is None


def score_candidates(candidates: Candidates, similarity: torch.Tensor, frame_hw: tuple[int, int],
                     rules: ScoringRules = ScoringRules()) -> list[CandidateScore]:
    """Score and check each candidate (module docstring); one entry per candidate, in order.

    similarity: (h, w) float32 raw foreground cosine on the prior's grid (spanning the
    whole frame); frame_hw: (H, W) of the frame the points are in (pixels).
    """
    height, width = frame_hw
    masks = candidates.low_res[:, 0] > 0  # (k, S/4, S/4)
    cells = masks.shape[-1]
    area = masks.float().mean(dim=(1, 2))
    sim = similarity.to(masks.device, torch.float32)
    weights = F.adaptive_avg_pool2d(masks.float()[:, None], tuple(sim.shape))[:, 0]  # (k, h, w)
    total = weights.sum(dim=(1, 2))
    mean_sim = (weights * sim).sum(dim=(1, 2)) / total.clamp_min(1e-12)
    iou = candidates.iou.float().clamp(0.0, 1.0)
    prob = torch.sigmoid(candidates.object_score_logits.float())
    score = mean_sim * iou ** rules.iou_weight * prob ** rules.object_weight
    cols = np.clip((candidates.points_xy[:, 0] / width * cells).astype(np.int64), 0, cells - 1)
    rows = np.clip((candidates.points_xy[:, 1] / height * cells).astype(np.int64), 0, cells - 1)
    device = masks.device
    inside = masks[torch.arange(len(candidates), device=device), torch.as_tensor(rows, device=device),
                   torch.as_tensor(cols, device=device)]
    host = torch.stack([score, mean_sim, iou, prob, area, total, inside.float(),
                        candidates.object_score_logits.float()]).cpu().tolist()  # one sync
    verdicts = []
    for i in range(len(candidates)):
        s, m, q, p, a, t, ins, logit = (row[i] for row in host)
        empty = t <= 0.0
        if logit <= 0.0:
            reason: Optional[str] = "absent"
        elif empty or a < rules.min_area_fraction:
            reason = "empty"
        elif a > rules.max_area_fraction:
            reason = "full frame"
        elif rules.require_point_inside and not ins:
            reason = "point outside"
        else:
            reason = None
        verdicts.append(CandidateScore(i, math.nan if empty else s, math.nan if empty else m,
                                       q, p, a, reason))
    return verdicts
