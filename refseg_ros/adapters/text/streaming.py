"""SAMWISE in the engine's streaming loop: the causal mode (a result every frame) and
the official clip mode (results when a clip completes).

The official code segments a video in non-overlapping clips of T frames, each clip's
frames adapted together (HSA across the clip). A robot cannot wait for the future, so
here frame t is adapted with the frames t-T+1 .. t (a causal window): each CMT adapter
attends over the Hiera streams that the T-1 earlier frames had when they were adapted
(kept, bounded, by `CaptionVariant`) and the new frame's. T = 1 is pure per-frame
streaming. This mode has no official counterpart; on a stream's first frame it equals
the official per-frame output (clip of 1 frame), and it never looks ahead.

The clip mode (`mode="clip"`) is the official computation: non-overlapping clips of T
frames adapted together, memory across clips. A clip's frames are decoded when its last
frame arrives (or when the engine flushes the stream at its end), so results come T-1
frames late, as `Tracked.late`. With T = 1 the official code resets its memory on every
frame (per-frame segmentation), and so does this mode.

Tracking (`SamwiseTracker`) is SAMWISE's: memory attention over the target's bounded
memory (the last num_maskmem - 1 frames, up to max_obj_ptrs pointers, no conditioning
frame; the first frame without memory), the decoder with the caption token (single mask,
token 0), the CME schedule on what is written to memory (`memory_write`), and memories
kept in float32 as SAMWISE keeps them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Hashable, Optional

import numpy as np
import torch

from refseg_ros.engine import heads
from refseg_ros.engine.features import FrameFeatures
from refseg_ros.engine.memory import MemoryEntry, TargetMemory
from refseg_ros.engine.seams import Tracked

from .adapter import SamwiseAdapter
from .decoding import decode_with_text, encode_memory, output_logits, without_memory
from .encoder import encode_clip
from .memory_write import cme_due, decide_memory_mask
from .preprocess import preprocess_frame

MODES = ("causal", "clip")


@dataclass
class CaptionFrame:
    """One frame adapted for one caption: its features (as `encode_image` lays them
    out), the caption token (1, 256) float32, and the frame's resized size (h, w) inside
    the padded S x S model input."""

    features: FrameFeatures
    text_token: torch.Tensor
    resized_hw: tuple[int, int]
    index: int = -1  # the stream's frame number
    frame_hw: tuple[int, int] = (0, 0)  # the frame's (H, W) pixels


class CaptionVariant:
    """The adapted image-encoder pass of one caption on one stream (`seams.FeatureVariant`).

    Keeps, per CMT adapter, the Hiera streams of the last `window - 1` frames (float32,
    channels-last; at hiera_b+ 1024 about 26 MB per frame), nothing else.
    """

    def __init__(self, sam: torch.nn.Module, adapter: SamwiseAdapter, input_ids: torch.Tensor, window: int):
        if window < 1:
            raise ValueError(f"the causal window must be at least 1 frame, got {window}")
        self.sam, self.adapter, self.window = sam, adapter, window
        self.input_ids = input_ids
        self.device = next(sam.parameters()).device
        self.past: list[deque[torch.Tensor]] = [deque(maxlen=window - 1) for _ in adapter.cmt]

    def encode(self, frame: np.ndarray, index: int) -> CaptionFrame:
        """frame (H, W, 3) uint8 RGB -> CaptionFrame (the official preprocessing)."""
        image, resized = preprocess_frame(frame, self.sam.image_size)
        past = [torch.cat(list(d), dim=0) if d else None for d in self.past]
        clip = encode_clip(self.sam, self.adapter, image[None].to(self.device),
                           self.input_ids.to(self.device), past=past)
        if self.window > 1:
            for kept, entering in zip(self.past, clip.adapter_inputs):
                kept.append(entering)
        return CaptionFrame(clip.features[0], clip.text_token, resized, index, tuple(frame.shape[:2]))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in self.past for t in d)


class CaptionClipVariant:
    """The official clip mode's adapted pass of one caption on one stream
    (`seams.FeatureVariant`): frames are buffered (preprocessed, float32) until T are
    there, then adapted together. Keeps at most T-1 preprocessed frames."""

    def __init__(self, sam: torch.nn.Module, adapter: SamwiseAdapter, input_ids: torch.Tensor, window: int):
        if window < 1:
            raise ValueError(f"the clip must be at least 1 frame, got {window}")
        self.sam, self.adapter, self.window, self.input_ids = sam, adapter, window, input_ids
        self.device = next(sam.parameters()).device
        self.buffer: list[tuple[torch.Tensor, tuple[int, int], int, tuple[int, int]]] = []

    def encode(self, frame: np.ndarray, index: int) -> Optional[list[CaptionFrame]]:
        """The clip's frames once `frame` completes it, else None (buffered)."""
        image, resized = preprocess_frame(frame, self.sam.image_size)
        self.buffer.append((image, resized, index, tuple(frame.shape[:2])))
        return self.flush() if len(self.buffer) == self.window else None

    def flush(self) -> Optional[list[CaptionFrame]]:
        """Adapt what is buffered as a (possibly shorter) clip, as the official code does
        with a video's last frames; None when nothing is buffered."""
        if not self.buffer:
            return None
        images = torch.stack([b[0] for b in self.buffer]).to(self.device)
        clip = encode_clip(self.sam, self.adapter, images, self.input_ids.to(self.device))
        frames = [CaptionFrame(f, clip.text_token, resized, index, hw)
                  for f, (_, resized, index, hw) in zip(clip.features, self.buffer)]
        self.buffer = []
        return frames

    def nbytes(self) -> int:
        return sum(b[0].numel() * b[0].element_size() for b in self.buffer)


class SamwiseTracker:
    """Tracks one caption target (`seams.TargetTracker`); targets with the same caption
    and window share one `CaptionVariant` per stream."""

    def __init__(self, sam: torch.nn.Module, adapter: SamwiseAdapter, input_ids: torch.Tensor,
                 window: int = 8, cme_window: int = 4, cme_enabled: bool = True, mode: str = "causal"):
        """`sam` is the engine's SAM2 (the trunk the variant adapts); `input_ids` (L,)
        int64 the caption's RoBERTa token ids; `window` T >= 1 frames; `mode` causal or
        clip. Raises ValueError for another mode."""
        if mode not in MODES:
            raise ValueError(f"SAMWISE streaming mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.sam, self.adapter = sam, adapter
        self.input_ids = input_ids.detach().to(torch.int64).flatten().cpu()
        self.window, self.cme_window, self.cme_enabled = window, cme_window, cme_enabled
        self.variant_key: Hashable = ("samwise", mode, id(adapter), tuple(self.input_ids.tolist()), window)
        self.frames_seen = 0
        self.last_switch = 0

    def new_variant(self) -> CaptionVariant | CaptionClipVariant:
        variant = CaptionVariant if self.mode == "causal" else CaptionClipVariant
        return variant(self.sam, self.adapter, self.input_ids, self.window)

    def track(self, model: torch.nn.Module, encoded, memory: TargetMemory, index: int,
              frame_hw: tuple[int, int]) -> Optional[Tracked]:
        """Causal: `encoded` is this frame's CaptionFrame. Clip: None while the clip
        fills (returns None: no result yet), or the clip's CaptionFrames, decoded in
        order (the last one's result returned, the earlier ones' as `late`)."""
        if self.mode == "causal":
            return self._frame(model, encoded, memory, frame_hw)
        if encoded is None:
            return None
        outs = [(cf.index, self._frame(model, cf, memory, cf.frame_hw)) for cf in encoded]
        last = outs[-1][1]
        last.late = outs[:-1]
        return last

    def _frame(self, model: torch.nn.Module, encoded: CaptionFrame, memory: TargetMemory,
               frame_hw: tuple[int, int]) -> Tracked:
        features, token, index = encoded.features, encoded.text_token, encoded.index
        per_frame = self.mode == "clip" and self.window == 1  # the official reset on every frame
        if per_frame:
            memory.clear()
        if len(memory) == 0:
            pix = without_memory(model, features)
        else:
            pix = heads.attend_memory(model, features, [memory.select(index)])
        decoded = decode_with_text(model, pix, features, token)
        t = 0 if per_frame else self.frames_seen
        run_cme = self.cme_enabled and cme_due(t, self.last_switch, self.cme_window)
        decision = decide_memory_mask(model, self.adapter, features, decoded, token, run_cme)
        if decision.switched:
            self.last_switch = t
        written = encode_memory(model, features, decision.mask, decoded.obj_ptr)
        memory.push(MemoryEntry(index, decoded.obj_ptr, written.maskmem_features, written.maskmem_pos_enc))
        self.frames_seen += 1
        logits = output_logits(decoded.low_res_masks, model.image_size, encoded.resized_hw, frame_hw)
        return Tracked(decoded.low_res_masks, decoded.object_score_logits, logits)
