"""FSSAM's Support-Calibrated Memory Attention, as a cross-attention hook.

Paper: Xu et al. (ICML 2025), Support-Calibrated Memory Attention. In every memory-
attention layer, after the cross-attention's projections and RoPE, the support keys'
foreground prototype says which query-memory keys look like the object; attention to the
other query-memory keys is penalised:
    c    = min-max(cos(masked_average(K_support, m_support), K_query))   (per key, in [0, 1])
    A    = q K^T / sqrt(d)
    pen  = 10 * min(min-max_row(A[:, query block]) + (c - 1), 0)          (in [-10, 0])
    out  = softmax(A + pen on the query block) V
The hook plugs into `refseg_ros.engine.heads.attend_memory_tokens`; SAM2's module is used
as is.

Memory layout the hook expects (tokens along the key axis, each spatial memory h*w tokens
row-major): support memories 0..S-1, then the query-Disc memory, then pointer tokens.

Two modes:
- "official": what FSSAM's release computes. Only the first support's mask is given to the
  calibration, so it always assumes one support: the prototype comes from memory block 0,
  the penalised "query" block is memory block 1 (with two or more supports that is the
  second support's memory, not the query's), and nothing is averaged. 1-shot: the paper.
- "paper": every support's prototype (one cosine map per shot, averaged), the supports'
  keys and values averaged into one block, the penalty on the query-Disc block.
Both use FSSAM's masked average (`prototypes.masked_average`, the function the release's
missing method is bound to in the parity fixtures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..prototypes import COSINE_EPS, masked_average, min_max

MODES = ("official", "paper")
PENALTY_SCALE = 10.0


@dataclass
class SupportCalibration:
    """Per-target hook: `hook(layer, q, k, v) -> (k', v', bias)` (see heads.CrossAttentionHook).

    support_masks: (S, 1, h, w) float {0, 1}, each support's mask on the memory grid
    (nearest from the model's input size). q (B, heads, h*w, d); k, v (B, heads, N, d).
    """

    support_masks: torch.Tensor
    mode: str = "paper"
    penalty_scale: float = PENALTY_SCALE

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"calibration mode must be one of {MODES}, got {self.mode!r}")

    @property
    def calibrated_supports(self) -> int:
        """How many leading memory blocks are treated as supports."""
        return 1 if self.mode == "official" else self.support_masks.shape[0]

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        shots = self.calibrated_supports
        batch, heads, tokens, dim = q.shape
        height, width = self.support_masks.shape[-2:]
        if height * width != tokens:
            raise ValueError(f"support masks of {height}x{width} for {tokens} query tokens")
        query_block = k[:, :, shots * tokens:(shots + 1) * tokens]  # (B, heads, hw, d)
        query_norm = torch.norm(query_block, 2, -1, True)
        similarity = []
        for shot in range(shots):
            support = k[:, :, shot * tokens:(shot + 1) * tokens]
            support = support.transpose(-2, -1).reshape(batch * heads, dim, height, width)
            mask = self.support_masks[shot:shot + 1].to(k.dtype).expand(batch * heads, -1, -1, -1)
            proto = masked_average(support, mask).reshape(batch, heads, 1, dim)
            proto_norm = torch.norm(proto, 2, -1, True)
            cos = (proto @ query_block.transpose(-2, -1)) / (proto_norm @ query_norm.transpose(-2, -1) + COSINE_EPS)
            similarity.append(min_max(cos))  # (B, heads, 1, hw)
        c = similarity[0] if shots == 1 else torch.cat(similarity, dim=2).mean(2, keepdim=True)
        if shots > 1:
            supports_k = k[:, :, :shots * tokens].reshape(batch, heads, shots, tokens, dim).mean(2)
            supports_v = v[:, :, :shots * tokens].reshape(batch, heads, shots, tokens, dim).mean(2)
            k = torch.cat([supports_k, k[:, :, shots * tokens:]], dim=2)
            v = torch.cat([supports_v, v[:, :, shots * tokens:]], dim=2)
        # After averaging, the query block is block 1 in either mode.
        scores = (q @ k[:, :, tokens:2 * tokens].transpose(-2, -1)) / (dim ** 0.5)
        penalty = (min_max(scores) + (c - 1.0)).clamp_max(0) * self.penalty_scale
        bias = q.new_zeros(batch, heads, tokens, k.shape[2])
        bias[..., tokens:2 * tokens] = penalty
        return k, v, bias
