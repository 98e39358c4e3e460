"""Give memory back while an engine is idle, without forgetting any target.

A paused node (lifecycle: inactive) should not sit on device memory it does not need:
each stream keeps its last frame's features only for inspection, and the CUDA caching
allocator holds freed blocks until asked to return them. Targets' memories stay, so
tracking resumes where it stopped.
"""

from __future__ import annotations

import gc

import torch

from .engine import SegmentationEngine


def release_cached_features(engine: SegmentationEngine) -> int:
    """Drop every stream's cached last-frame features; returns the bytes released."""
    released = 0
    with engine._lock:
        for stream in engine._streams.values():
            if stream.last_features is not None:
                released += stream.last_features.nbytes()
                stream.last_features = None
    return released


def free_device_memory(engine: SegmentationEngine | None) -> int:
    """Release cached features and return unused CUDA blocks to the driver."""
    released = release_cached_features(engine) if engine is not None else 0
    gc.collect()
    if torch.cuda.is_available() and (engine is None or engine.device.type == "cuda"):
        torch.cuda.empty_cache()
    return released
