"""The Conditional Memory Encoder (CME) of SAMWISE (Sec. 3.3 of the paper).

Every few frames SAMWISE asks whether the memory-free prediction follows the caption
better than the memory-conditioned one (a new object entering, a tracking drift). The
CME reads three 256-d tokens - a learned decision token, the object pointer of the
memory-conditioned pass, and the early output token of the memory-free pass - through
one post-norm self-attention block (8 heads, FFN 128, ReLU), and a linear head on the
decision token gives two logits: 0 "keep", 1 "switch". On "switch" only what the frame
writes to memory changes (`reweight_memory_mask`).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

SWITCH = 1


class ConditionalMemoryEncoder(nn.Module):
    """Decision token + self-attention block + 2-way linear head.

    `unused_norm` is a LayerNorm the official block defines and never applies; it is
    kept so that an official checkpoint loads strictly and the parameter count (331,394
    at width 256) matches.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, ffn_dim: int = 128):
        super().__init__()
        self.decision_token = nn.Parameter(torch.zeros(1, dim))
        self.self_attention = nn.MultiheadAttention(dim, num_heads, dropout=0.1)
        self.norm_attention = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.unused_norm = nn.LayerNorm(dim)
        self.decision_head = nn.Linear(dim, 2)

    def forward(self, obj_ptr_with_memory: torch.Tensor, early_token_no_memory: torch.Tensor) -> torch.Tensor:
        """(B, 256) pointer of the memory pass and (B, 256) early mask token of the
        memory-free pass -> (B, 2) logits (keep, switch), float32."""
        B = obj_ptr_with_memory.shape[0]
        seq = torch.stack([self.decision_token.expand(B, -1), obj_ptr_with_memory, early_token_no_memory])
        seq = self.norm_attention(seq + self.self_attention(seq, seq, seq, need_weights=False)[0])
        seq = self.norm_ffn(seq + self.ffn_out(F.relu(self.ffn_in(seq))))
        return self.decision_head(seq[0])


def reweight_memory_mask(with_memory: torch.Tensor, without_memory: torch.Tensor) -> torch.Tensor:
    """SAMWISE's `reweight` switch on (B, 1, S, S) high-res logits: where the memory-free
    logits are positive they replace the memory ones, times 10. Returns a new tensor."""
    out = with_memory.clone()
    sel = without_memory > 0
    out[sel] = without_memory[sel] * 10
    return out


# Official names inside `conditional_memory_encoder.` -> ours.
OFFICIAL_NAMES = {
    "decision_token.weight": "decision_token",
    "transformerBlock.self_attn.": "self_attention.",
    "transformerBlock.norm1.": "norm_attention.",
    "transformerBlock.linear1.": "ffn_in.",
    "transformerBlock.linear2.": "ffn_out.",
    "transformerBlock.norm3.": "norm_ffn.",
    "transformerBlock.norm2.": "unused_norm.",
    "decision_class_head.": "decision_head.",
}

