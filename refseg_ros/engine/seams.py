"""The engine's seams for adapters: a target may bring its own image features and its
own way of tracking, and the engine still owns the loop, the memory bank and the states.

A target added with a `TargetTracker` (a caption, for instance) is tracked like this on
every frame of its stream:

1. the engine asks the stream's `FeatureVariant` for `tracker.variant_key` to encode the
   frame (one variant object per stream and key, created by `tracker.new_variant()`, so
   every target naming the same key shares one pass per frame);
2. `tracker.track(model, encoded, memory, index, frame_hw)` decodes the frame against the
   target's bounded `TargetMemory`, writes what the frame leaves behind into it, and
   returns a `Tracked`;
3. the engine turns `Tracked` into the target's result and state, as for every target.

Targets without a tracker share the plain image-encoder pass and SAM2's own tracking,
batched by memory layout. The engine imports no adapter: adapters implement these
protocols.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Protocol

import numpy as np
import torch

from .memory import TargetMemory


@dataclass
class Tracked:
    """A tracker's output for one target on one frame.

    low_res_masks: (1, 1, S/4, S/4) float32 logits at the model's mask resolution;
    object_score_logits: (1, 1) float32, > 0 means present;
    frame_logits: (1, 1, H, W) float32 logits at the frame's size, when the tracker maps
    its output to the frame itself (e.g. after an aspect-preserving resize); None lets
    the engine resize `low_res_masks` bilinearly, as for plain targets.
    """

    low_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    frame_logits: Optional[torch.Tensor] = None


class FeatureVariant(Protocol):
    """A per-stream image-encoder pass other than the plain one.

    Stateful: it may keep what earlier frames of its stream left (a causal window), and
    must keep that bounded; `nbytes()` reports it for `retained_bytes`.
    """

    def encode(self, frame: np.ndarray, index: int) -> object:
        """Encode `frame` (H x W x 3 uint8 RGB), the stream's frame number `index`."""

    def nbytes(self) -> int:
        """Bytes of tensors kept between frames."""


class TargetTracker(Protocol):
    """How an adapter tracks one target (see the module docstring)."""

    variant_key: Hashable

    def new_variant(self) -> FeatureVariant:
        """A fresh variant for one stream; called once per stream and key."""

    def track(self, model: torch.nn.Module, encoded: object, memory: TargetMemory, index: int,
              frame_hw: tuple[int, int]) -> Tracked:
        """Decode frame `index` (its size `frame_hw` = (H, W) pixels) for this target and
        write its memory; `encoded` is what the variant returned for the frame."""
