"""The official SAMWISE clip mode, frame by frame (Sec. 3 of the paper; its eval loop).

Frames are grouped in consecutive clips of T frames; each clip gets one adapted pass
(`encode_clip`) with one caption. Then, frame by frame, in order:

- memory conditioning keyed by the **absolute** frame index (`decoding.attend_memory`);
  the bank is reset when a video starts, and, with T = 1, on every frame (the official
  single-frame branch: every frame is decoded without memory, at index 0);
- the mask decoder with the clip's caption token (single mask, token 0);
- the CME (Sec. 3.3) on frame t when t > window and t - last switch >= window - 1
  (window = `cme_decision_window`, 4): a memory-free decoder pass, the CME on
  (pointer with memory, early token without memory); on "switch" the mask written to
  memory is reweighted and the frame becomes the last switch. The frame's own output
  never changes;
- the memory write from the (possibly reweighted) high-res logits.

Like the official code, every frame's memory is kept for the whole video (the engine's
streaming mode bounds it; that is not this module's job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .adapter import SamwiseAdapter
from .decoding import MemoryEntry, TextDecoded, attend_memory, decode_with_text, encode_memory, output_logits
from .encoder import AdaptedClip, encode_clip
from .memory_write import cme_due, decide_memory_mask
from .preprocess import preprocess_frame


@dataclass
class FrameOutput:
    """One frame's result: the decoder output with memory, the caption token used, the
    absolute memory key, the CME logits (2,) if it ran, whether it switched, the memory-free
    object score if it ran, and the logits (1, 1, H, W) at the frame's size."""

    frame_idx: int
    memory_idx: int
    decoded: TextDecoded
    text_token: torch.Tensor
    mask_logits: torch.Tensor
    cme_logits: Optional[torch.Tensor] = None
    cme_switched: bool = False
    cme_nomem_object_score: Optional[float] = None


@dataclass
class ClipRunner:
    """Runs one caption over a video in official clip mode.

    `cme_enabled` False skips the CME (an ablation the parity tests use to show that the
    fixtures detect it).
    """

    sam: torch.nn.Module
    adapter: SamwiseAdapter
    clip_window: int = 8
    cme_window: int = 4
    cme_enabled: bool = True
    bank: dict[int, MemoryEntry] = field(default_factory=dict)
    last_switch: int = 0
    clip_states: list = field(default_factory=list)

    def reset(self) -> None:
        self.bank, self.last_switch = {}, 0

    def run_video(self, frames: np.ndarray, input_ids: torch.Tensor, probe: Optional[dict] = None,
                  stop_after: Optional[int] = None) -> list[FrameOutput]:
        """frames (N, H, W, 3) uint8 RGB, input_ids (L,) int64 -> one FrameOutput per frame.

        `probe` receives the first clip's adapter streams (see encode_clip) and
        `preprocessed_frame0` (3, h, w). `stop_after` ends after that many frames.
        """
        self.reset()
        self.clip_states = []
        outputs: list[FrameOutput] = []
        n = len(frames) if stop_after is None else min(stop_after, len(frames))
        for start in range(0, n, self.clip_window):
            idx = list(range(start, min(start + self.clip_window, len(frames))))
            prepped = [preprocess_frame(frames[i], self.sam.image_size) for i in idx]
            if probe is not None and start == 0:
                h, w = prepped[0][1]
                probe["preprocessed_frame0"] = prepped[0][0][:, :h, :w].clone()
            images = torch.stack([p[0] for p in prepped])
            clip = encode_clip(self.sam, self.adapter, images, input_ids,
                               probe=probe if start == 0 else None)
            self.clip_states.append(clip.text_state)
            for j, frame_idx in enumerate(idx):
                if frame_idx >= n:
                    break
                outputs.append(self.step(clip, j, frame_idx, prepped[j][1], frames.shape[1:3]))
        return outputs

    def step(self, clip: AdaptedClip, j: int, frame_idx: int, resized_hw, frame_hw) -> FrameOutput:
        """Frame j of `clip`, at absolute index `frame_idx`."""
        sam, features = self.sam, clip.features[j]
        if self.clip_window == 1:
            self.reset()
            memory_idx = 0
        else:
            memory_idx = frame_idx
        pix = attend_memory(sam, features, memory_idx, self.bank)
        decoded = decode_with_text(sam, pix, features, clip.text_token)
        logits = output_logits(decoded.low_res_masks, sam.image_size, tuple(resized_hw), tuple(frame_hw))
        out = FrameOutput(frame_idx, memory_idx, decoded, clip.text_token, logits)
        run_cme = self.cme_enabled and cme_due(memory_idx, self.last_switch, self.cme_window)
        decision = decide_memory_mask(sam, self.adapter, features, decoded, clip.text_token, run_cme)
        out.cme_logits, out.cme_switched = decision.cme_logits, decision.switched
        out.cme_nomem_object_score = decision.nomem_object_score
        if decision.switched:
            self.last_switch = memory_idx
        mem_masks = decision.mask
        self.bank[memory_idx] = encode_memory(sam, features, mem_masks, decoded.obj_ptr)
        return out
