"""What a caption target's frame writes to memory: SAMWISE's conditional memory encoder
schedule (Sec. 3.3), shared by the official clip mode and the engine's streaming tracker.

On frame t (counted from the target's first frame) the CME runs when t > window and
t - last switch >= window - 1 (window = `cme_decision_window`, 4): one memory-free
decoder pass with the caption token, then the CME on (pointer with memory, early token
without memory). On "switch" the mask written to memory is the reweighted one and t
becomes the last switch. The frame's own output never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from refseg_ros.engine.features import FrameFeatures

from .adapter import SamwiseAdapter
from .cme import SWITCH, reweight_memory_mask
from .decoding import TextDecoded, decode_with_text, without_memory


@dataclass
class MemoryDecision:
    """mask: (1, 1, S, S) float32 high-res logits to write; switched: the CME said
    switch; cme_logits: (2,) (keep, switch) when the CME ran; nomem_object_score: the
    memory-free pass's object score logit when it ran."""

    mask: torch.Tensor
    switched: bool = False
    cme_logits: Optional[torch.Tensor] = None
    nomem_object_score: Optional[float] = None


def cme_due(frame: int, last_switch: int, window: int) -> bool:
    """Whether the CME runs on frame `frame` (see the module docstring)."""
    return frame - last_switch >= window - 1 and frame > window


def decide_memory_mask(sam: torch.nn.Module, adapter: SamwiseAdapter, features: FrameFeatures,
                       decoded: TextDecoded, text_token: torch.Tensor, run_cme: bool) -> MemoryDecision:
    """The mask frame `decoded` writes to memory: its own high-res logits, or, when
    `run_cme` and the CME says switch, those reweighted by the memory-free pass."""
    if not run_cme:
        return MemoryDecision(decoded.high_res_masks)
    free = decode_with_text(sam, without_memory(sam, features), features, text_token)
    logits = adapter.cme(decoded.obj_ptr, free.early_token)
    switched = int(logits.argmax()) == SWITCH
    mask = reweight_memory_mask(decoded.high_res_masks, free.high_res_masks) if switched else decoded.high_res_masks
    return MemoryDecision(mask, switched, logits[0], float(free.object_score_logits))
