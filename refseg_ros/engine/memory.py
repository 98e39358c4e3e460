"""A target's bounded memory bank and the choice of what memory attention sees.

SAM2's video predictor keeps every frame's outputs and picks, for frame t, the
conditioning frames, the non-conditioning frames t-1 .. t-(num_maskmem-1) and the object
pointers of frames t-1 .. t-(max_obj_ptrs-1). The bank keeps only what such a choice can
ever pick, so its size does not depend on the length of the stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class MemoryEntry:
    """What one frame (or a reference image) leaves behind for later frames."""

    frame_index: int
    obj_ptr: torch.Tensor  # (1, C)
    maskmem_features: Optional[torch.Tensor]  # (1, mem_dim, h, w) bf16; dropped when too old
    maskmem_pos_enc: Optional[torch.Tensor]  # (1, mem_dim, h, w)

    def nbytes(self) -> int:
        tensors = (self.obj_ptr, self.maskmem_features, self.maskmem_pos_enc)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass
class MemorySelection:
    """The entries one frame attends to, with the temporal codes SAM2 gives them."""

    masks: list[tuple[int, MemoryEntry]]  # (t_pos, entry); t_pos 0 = conditioning
    pointers: list[tuple[int, MemoryEntry]]  # (signed frame distance, entry)

    def layout(self) -> tuple:
        """Entries of equal layout can be batched: same t_pos codes, same pointer count."""
        return tuple(t for t, _ in self.masks), len(self.pointers)


class TargetMemory:
    """Pinned conditioning entries plus a rolling window of recent frames."""

    def __init__(self, num_maskmem: int, max_obj_ptrs: int, max_cond_frames: int = -1):
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.max_cond_frames = max_cond_frames
        self.conditioning: dict[int, MemoryEntry] = {}
        # Pointers reach further back than mask memories; keep enough for both.
        self.recent: deque[MemoryEntry] = deque(maxlen=max(num_maskmem - 1, max_obj_ptrs - 1, 1))

    def pin(self, entry: MemoryEntry) -> None:
        """Add a conditioning entry (a prompt or a reference); it is never evicted."""
        self.conditioning[entry.frame_index] = entry
        self.recent = deque((e for e in self.recent if e.frame_index != entry.frame_index),
                            maxlen=self.recent.maxlen)

    def unpin(self, frame_index: int) -> None:
        """Forget the conditioning entry of `frame_index` (a seed replaced by a newer one)."""
        self.conditioning.pop(frame_index, None)

    def push(self, entry: MemoryEntry) -> None:
        """Add a tracked frame; the oldest falls out, and the one leaving the mask-memory
        window keeps only its object pointer."""
        self.recent.append(entry)
        keep = self.num_maskmem - 1
        if len(self.recent) > keep:
            leaving = self.recent[-keep - 1]
            leaving.maskmem_features = None
            leaving.maskmem_pos_enc = None

    def select(self, frame_index: int) -> MemorySelection:
        """Entries for frame `frame_index`, chosen as SAM2 chooses them."""
        chosen, unchosen = self._select_conditioning(frame_index)
        masks: list[tuple[int, MemoryEntry]] = [(0, e) for e in chosen.values()]
        recent = list(self.recent)
        # The k-th most recent stored frame takes temporal slot num_maskmem - k, oldest
        # first. When every frame is stored this is frame t-k, exactly as in SAM2.
        depth = min(self.num_maskmem - 1, len(recent))
        masks += [(self.num_maskmem - k, recent[-k]) for k in range(depth, 0, -1)]
        pointers = [(frame_index - t, e) for t, e in chosen.items() if t <= frame_index]
        for k, entry in enumerate(reversed(recent), start=1):
            if k >= self.max_obj_ptrs:
                break
            pointers.append((frame_index - entry.frame_index, entry))
        # Unselected conditioning entries act as recent frames for pointers, as in SAM2.
        for t, entry in unchosen.items():
            if 0 < frame_index - t < self.max_obj_ptrs:
                pointers.append((frame_index - t, entry))
        return MemorySelection(masks=masks, pointers=pointers)

    def _select_conditioning(self, frame_index: int):
        cond = self.conditioning
        limit = self.max_cond_frames
        if limit == -1 or len(cond) <= limit:
            return dict(cond), {}
        chosen: dict[int, MemoryEntry] = {}
        before = max((t for t in cond if t < frame_index), default=None)
        if before is not None:
            chosen[before] = cond[before]
        after = min((t for t in cond if t >= frame_index), default=None)
        if after is not None:
            chosen[after] = cond[after]
        rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame_index))
        for t in rest[: max(limit - len(chosen), 0)]:
            chosen[t] = cond[t]
        return chosen, {t: e for t, e in cond.items() if t not in chosen}

    def nbytes(self) -> int:
        entries = list(self.conditioning.values()) + list(self.recent)
        return sum(e.nbytes() for e in entries)

    def forget_recent(self) -> None:
        """Forget the tracked frames, keep the conditioning entries (a target declared
        gone: what was tracked lately is not trusted, its examples and seeds are)."""
        self.recent.clear()

    def clear(self) -> None:
        """Forget every entry (a mode that segments each frame on its own)."""
        self.conditioning.clear()
        self.recent.clear()

    def __len__(self) -> int:
        return len(self.conditioning) + len(self.recent)
