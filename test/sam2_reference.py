"""Run sam2's own SAM2VideoPredictor on frames and prompts, for parity checks."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from refseg_ros.engine.model import build_model


@dataclass
class ReferencePrompt:
    obj_id: int
    frame: int
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None


def write_jpeg_clip(frames: list[np.ndarray], folder: str) -> list[np.ndarray]:
    """Write frames as the predictor's JPEG folder; return the decoded frames both sides use."""
    decoded = []
    for i, frame in enumerate(frames):
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(frame).save(path, quality=95)
        decoded.append(np.array(Image.open(path).convert("RGB")))
    return decoded


def official_predictor(engine_model: torch.nn.Module, model_name: str, image_size: int):
    """sam2's video predictor with the engine's weights."""
    predictor = build_model(model_name, image_size=image_size, device="cpu",
                            target="sam2.sam2_video_predictor.SAM2VideoPredictor")
    predictor.load_state_dict(engine_model.state_dict())
    return predictor


def run_official(predictor, frames: list[np.ndarray], prompts: list[ReferencePrompt],
                 start_frame: int = 0) -> dict[int, dict[int, torch.Tensor]]:
    """Low-res mask logits per frame per object id, from `start_frame` on."""
    with tempfile.TemporaryDirectory() as folder:
        decoded = write_jpeg_clip(frames, folder)
        state = predictor.init_state(folder)
    for p in prompts:
        if p.mask is not None:
            predictor.add_new_mask(state, p.frame, p.obj_id, p.mask)
        else:
            predictor.add_new_points_or_box(state, p.frame, p.obj_id, box=np.array(p.box, dtype=np.float32))
    out: dict[int, dict[int, torch.Tensor]] = {}
    for frame_idx, obj_ids, _ in predictor.propagate_in_video(state, start_frame_idx=start_frame):
        per_obj = {}
        for i, oid in enumerate(obj_ids):
            stored = state["output_dict_per_obj"][i]
            entry = stored["cond_frame_outputs"].get(frame_idx) or stored["non_cond_frame_outputs"].get(frame_idx)
            if entry is not None:
                per_obj[oid] = entry["pred_masks"].float().clone()
        out[frame_idx] = per_obj
    return out, decoded
