"""A small engine on the CPU for the engine's behaviour tests (not parity)."""

from __future__ import annotations

import torch

from refseg_ros.engine import EngineConfig, SegmentationEngine

SIZE = 128  # image size (pixels) of the behaviour tests' engine


def make_engine(size: int = SIZE, **overrides) -> SegmentationEngine:
    """SAM2.1 hiera_t with random weights (seed 3) at `size` on the CPU; `overrides` are
    EngineConfig fields. The object-score head's bias is raised so the random objects
    stay present (see test_engine_parity)."""
    config = EngineConfig(image_size=size, device="cpu", seed=3, **overrides)
    engine = SegmentationEngine.from_config(config)
    with torch.no_grad():
        engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 2.0
    return engine
