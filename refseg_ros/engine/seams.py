"""The engine's seams for adapters: a target may bring its own image features and its
own way of tracking, and the engine still owns the loop, the memory bank and the states.

A target added with a `TargetTracker` (a caption, for instance) is tracked like this on
every frame of its stream:

1. the engine asks the stream's `FeatureVariant` for `tracker.variant_key` to encode the
   frame (one variant object per stream and key, created by `tracker.new_variant()`, so
   every target naming the same key shares one pass per frame); a key of None asks for
   the plain pass, shared with the plain targets, as a `PlainFrame`;
2. `tracker.track(model, encoded, memory, index, frame_hw)` decodes the frame against the
   target's bounded `TargetMemory`, writes what the frame leaves behind into it, and
   returns a `Tracked`;
3. the engine turns `Tracked` into the target's result and state, as for every target.

Targets without a tracker share the plain image-encoder pass and SAM2's own tracking,
batched by memory layout. Such a target may have a `Proposer` (acquisition): on every
frame it may return a `Seed`, a prompt on that frame that the engine pins as a
conditioning memory (at most `EngineConfig.max_seeds` seeds are kept; the oldest goes);
while the target is tracked it may instead return `Absent`, and the engine declares the
target lost there (its memory kept, its mask withheld until a seed finds it again).

The engine imports no adapter: adapters implement these protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional, Protocol

import numpy as np
import torch

from .features import FrameFeatures
from .memory import MemoryEntry, TargetMemory
from .types import Prompt, TargetState


@dataclass
class PlainFrame:
    """What a tracker with `variant_key` None gets: the plain pass's features (shared with
    every plain target of the stream) and the frame itself (H x W x 3 uint8 RGB), for
    trackers that need more than SAM2's features (e.g. a DINOv2 prior on the frame)."""

    features: FrameFeatures
    frame: np.ndarray


@dataclass
class Tracked:
    """A tracker's output for one target on one frame.

    low_res_masks: (1, 1, S/4, S/4) float32 logits at the model's mask resolution;
    object_score_logits: (1, 1) float32, > 0 means present;
    frame_logits: (1, 1, H, W) float32 logits at the frame's size, when the tracker maps
    its output to the frame itself (e.g. after an aspect-preserving resize); None lets
    the engine resize `low_res_masks` bilinearly, as for plain targets;
    late: results of earlier frames of the stream completed only now, as (frame index,
    Tracked with frame_logits set), oldest first (a tracker that decodes clips).
    """

    low_res_masks: torch.Tensor
    object_score_logits: torch.Tensor
    frame_logits: Optional[torch.Tensor] = None
    late: list = field(default_factory=list)


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
              frame_hw: tuple[int, int]) -> Optional[Tracked]:
        """Decode frame `index` (its size `frame_hw` = (H, W) pixels) for this target and
        write its memory; `encoded` is what the variant returned for the frame (None from
        a variant still buffering). None: no result for this frame yet (it comes later,
        in a `Tracked.late`); the engine then leaves the target out of this frame's results."""


@dataclass
class Seed:
    """A proposer's answer on one frame: `prompt` lies on that frame (its pixels) and is
    pinned as a conditioning memory of the target there; `memories` are conditioning
    entries made from images that are not stream frames (e.g. diffusion transition frames
    between a reference and the live frame, oldest first), pinned as they are just before
    the target's earliest conditioning entry, replacing the previous set; `reason` is said
    in the event."""

    prompt: Optional[Prompt] = None
    reason: str = ""
    memories: list[MemoryEntry] = field(default_factory=list)


@dataclass
class Absent:
    """A proposer's answer on a frame where the target is tracked (or occluded) but its
    proposer finds nothing like it where it is tracked: the engine declares it lost on
    that frame (event "target N lost: <reason>") and withholds its mask; its conditioning
    memories (examples, seeds) are kept, the frames it tracked lately are forgotten (they
    followed something else). A gating proposer (all that answer `Absent` today) then
    keeps it untracked until a `Seed` finds it again. On a target that is already
    acquiring or lost it only withholds the mask."""

    reason: str = ""


class Proposer(Protocol):
    """Looks for a target that is not tracked (acquisition seam): a reference prior, a
    grounding model. Slow work runs in the proposer's own background worker; `propose`
    only hands a frame over and collects what is finished, so it never blocks a frame.

    `gates_output`: while the target is acquiring or lost, publish no mask and do not
    track it unless a seed arrives (absence is an answer; never a mask from memory alone).
    A proposer that also watches a tracked target returns `Absent` when it is gone.
    """

    gates_output: bool

    def propose(self, model: torch.nn.Module, features: FrameFeatures, frame: np.ndarray, index: int,
                state: TargetState, box: Optional[tuple[int, int, int, int]]) -> Optional[Seed | Absent]:
        """A seed (or `Absent`, see above) for frame `index` (H x W x 3 uint8 `frame`, its
        plain `features`), given
        the target's state and box (x0, y0, x1, y1 pixels, or None) before this frame."""

    def close(self) -> None:
        """Stop background work (the target is forgotten)."""
