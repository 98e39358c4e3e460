"""Drive sam2's own SAM2VideoPredictor on the same weights and frames as the engine.

The engine's correctness and speed are stated relative to the official predictor; this
module is how the parity tests and the benchmarks run it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

from .model import build_model


@dataclass
class OfficialPrompt:
    """A mask, a box or clicks for object `obj_id` on frame `frame`."""

    obj_id: int
    frame: int
    mask: Optional[np.ndarray] = None
    box: Optional[tuple[float, float, float, float]] = None
    points: Optional[np.ndarray] = None  # N x 2 (x, y) pixels
    labels: Optional[np.ndarray] = None  # N, 1 object / 0 background


def official_predictor(engine_model: torch.nn.Module, model_name: str, image_size: int) -> torch.nn.Module:
    """sam2's video predictor built from the same config, holding the engine's weights."""
    predictor = build_model(model_name, image_size=image_size, device=next(engine_model.parameters()).device,
                            target="sam2.sam2_video_predictor.SAM2VideoPredictor")
    predictor.load_state_dict(engine_model.state_dict())
    predictor.max_obj_ptrs_in_encoder = engine_model.max_obj_ptrs_in_encoder
    return predictor


def jpeg_clip(frames: list[np.ndarray], folder: str) -> list[np.ndarray]:
    """Write frames as the predictor's JPEG folder; return the decoded frames both sides use."""
    from PIL import Image

    decoded = []
    for i, frame in enumerate(frames):
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(frame).save(path, quality=95)
        decoded.append(np.array(Image.open(path).convert("RGB")))
    return decoded


def start_official(predictor, frames: list[np.ndarray], prompts: list[OfficialPrompt]):
    """init_state on the clip and add the prompts; returns (state, decoded frames)."""
    with tempfile.TemporaryDirectory() as folder:
        decoded = jpeg_clip(frames, folder)
        state = predictor.init_state(folder)
    for p in prompts:
        if p.mask is not None:
            predictor.add_new_mask(state, p.frame, p.obj_id, p.mask)
        elif p.points is not None:
            predictor.add_new_points_or_box(state, p.frame, p.obj_id, points=np.asarray(p.points, np.float32),
                                            labels=np.asarray(p.labels, np.int32))
        else:
            predictor.add_new_points_or_box(state, p.frame, p.obj_id, box=np.array(p.box, dtype=np.float32))
    return state, decoded


def propagate(predictor, state, start_frame: int = 0) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
    """Per frame, the low-resolution mask logits of every object, as the predictor stores them."""
    for frame_idx, obj_ids, _ in predictor.propagate_in_video(state, start_frame_idx=start_frame):
        per_obj = {}
        for i, oid in enumerate(obj_ids):
            stored = state["output_dict_per_obj"][i]
            entry = stored["cond_frame_outputs"].get(frame_idx) or stored["non_cond_frame_outputs"].get(frame_idx)
            if entry is not None:
                per_obj[oid] = entry["pred_masks"].float()
        yield frame_idx, per_obj


def run_official(predictor, frames: list[np.ndarray], prompts: list[OfficialPrompt],
                 start_frame: int = 0) -> tuple[dict[int, dict[int, torch.Tensor]], list[np.ndarray]]:
    """Low-res logits per frame per object id from `start_frame` on, and the decoded frames."""
    state, decoded = start_official(predictor, frames, prompts)
    return {i: {k: v.clone() for k, v in out.items()} for i, out in propagate(predictor, state, start_frame)}, decoded


def state_nbytes(obj, seen: Optional[set] = None) -> int:
    """Bytes of every tensor reachable from an inference state (each counted once)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.untyped_storage().nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(state_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_nbytes(v, seen) for v in obj)
    return 0
