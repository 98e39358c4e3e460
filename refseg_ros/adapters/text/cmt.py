"""The Cross-Modal Temporal (CMT) adapter of SAMWISE (Sec. 3.2 of the paper).

One adapter sits after a Hiera stage (stride 8, 16 or 32) and the matching RoBERTa
layer group. It sees all T frames of a clip at once:

1. down-projections to the adapter width D = 256: vision by a 1x1 conv + BatchNorm +
   ReLU, text by a linear map (no bias);
2. Hierarchical Selective Attention (HSA): the down-projected map is cut into P x P
   windows; each window attends over its P*P cells in all T frames (T*P*P tokens), after
   a sine time embedding (normalised over the clip length) and a learned in-window
   position embedding; the result is added to the map;
3. vision-to-text attention (V2T): every visual cell queries the caption's tokens and the
   attention output multiplies the cell's features element-wise;
4. text-to-vision attention (T2V): every caption token queries the clip-mean of the
   down-projected visual map (before HSA) and multiplies its own features;
5. up-projections: vision by a 1x1 transposed conv + BatchNorm + ReLU, text linear.

The caller adds the two outputs to the Hiera and RoBERTa streams (the residuals).
BatchNorms use their running statistics (eval mode), as at inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ADAPTER_DIM = 256
NUM_HEADS = 8


def clip_time_embedding(num_frames: int, dim: int, device=None) -> torch.Tensor:
    """Sine time code of frames 1..T normalised to (0, 2*pi]: (T, dim) float32.

    Channel 2i is sin(2*pi*t/(T+1e-6) / 10000^(2i/dim)), channel 2i+1 the cosine of the
    same angle (DETR's 1-D sine embedding with normalisation).
    """
    t = torch.arange(1, num_frames + 1, dtype=torch.float32, device=device)
    t = t / (t[-1:] + 1e-6) * (2 * math.pi)
    freq = torch.arange(dim, dtype=torch.float32, device=device)
    freq = 10000 ** (2 * torch.div(freq, 2, rounding_mode="floor") / dim)
    angles = t[:, None] / freq  # (T, dim)
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)


class CrossModalTemporalAdapter(nn.Module):
    """One CMT adapter for a visual stream of `vision_channels` and RoBERTa's 768.

    `patch_size` is HSA's window side P (8, 4, 2 after Hiera stages 2, 3, 4).
    `t2v_enabled` exists only to show that the parity test detects a missing branch:
    off, the text stream skips the T2V multiplication.
    """

    def __init__(self, vision_channels: int, text_channels: int = 768,
                 adapter_dim: int = ADAPTER_DIM, patch_size: int = 2):
        super().__init__()
        self.patch_size = patch_size
        self.t2v_enabled = True
        self.vision_down = nn.Sequential(
            nn.Conv2d(vision_channels, adapter_dim, kernel_size=1, bias=False),
            nn.BatchNorm2d(adapter_dim), nn.ReLU())
        self.vision_up = nn.Sequential(
            nn.ConvTranspose2d(adapter_dim, vision_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(vision_channels), nn.ReLU())
        self.text_down = nn.Linear(text_channels, adapter_dim, bias=False)
        self.text_up = nn.Linear(adapter_dim, text_channels, bias=False)
        # HSA: LayerNorm, self-attention over T*P*P tokens, a linear output map.
        self.hsa_window_pos = nn.Parameter(torch.zeros(1, 1, 1, patch_size * patch_size, adapter_dim))
        self.hsa_norm = nn.LayerNorm(adapter_dim)
        self.hsa_attention = nn.MultiheadAttention(adapter_dim, NUM_HEADS, dropout=0.1)
        self.hsa_out = nn.Linear(adapter_dim, adapter_dim)
        self.v2t_attention = nn.MultiheadAttention(adapter_dim, NUM_HEADS)
        self.t2v_attention = nn.MultiheadAttention(adapter_dim, NUM_HEADS)

    def hierarchical_selective_attention(self, x: torch.Tensor) -> torch.Tensor:
        """HSA on the down-projected clip map (T, D, H, W) -> (H*W, T, D) tokens.

        Windows of P x P cells; each window's T*P*P tokens (time-major) attend to each
        other. H and W must be multiples of P.
        """
        T, D, H, W = x.shape
        P = self.patch_size
        if H % P or W % P:
            raise ValueError(f"HSA window {P} does not tile a {H}x{W} map")
        nh, nw = H // P, W // P
        # (T, D, nh, P, nw, P) -> (T, nh*nw windows, P*P cells, D)
        win = x.reshape(T, D, nh, P, nw, P).permute(0, 2, 4, 3, 5, 1).reshape(T, nh * nw, P * P, D)
        win = win + clip_time_embedding(T, D, x.device)[:, None, None, :] + self.hsa_window_pos[0, 0, 0][: P * P]
        seq = win.permute(0, 2, 1, 3).reshape(T * P * P, nh * nw, D)  # (T*P*P, windows, D)
        seq = self.hsa_norm(seq)
        seq = self.hsa_out(self.hsa_attention(seq, seq, seq, need_weights=False)[0])
        # back to (H*W, T, D), rows of cells in raster order
        out = seq.reshape(T, P, P, nh, nw, D).permute(3, 1, 4, 2, 0, 5).reshape(H * W, T, D)
        return out

    def forward(self, vision: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vision (T, C, H, W) channels-first (the T frames of one clip), text (L, 1, 768)
        sequence-first -> (T, C, H, W) and (L, 1, 768) updates for the two residuals."""
        T, _, H, W = vision.shape
        x = self.vision_down(vision)  # (T, D, H, W)
        tokens = x.flatten(2).permute(2, 0, 1)  # (H*W, T, D)
        t = self.text_down(text)  # (L, 1, D)
        attended = tokens + self.hierarchical_selective_attention(x)
        words = t.repeat_interleave(T, dim=1)  # (L, T, D)
        attended = attended * self.v2t_attention(attended, words, words, need_weights=False)[0]
        attended = attended.permute(1, 2, 0).reshape(T, -1, H, W)
        if self.t2v_enabled:
            clip_mean = tokens.mean(dim=1, keepdim=True)  # (H*W, 1, D)
            t = t * self.t2v_attention(t, clip_mean, clip_mean, need_weights=False)[0]
        return self.vision_up(attended), self.text_up(t)


# Official parameter names (SAMWISE's `cmt_adapters.{k}.*`) -> ours.
OFFICIAL_NAMES = {
    "spatial_pos_embed": "hsa_window_pos",
    "proj_vis_down.0.": "vision_down.0.",
    "proj_vis_down.1.": "vision_down.1.",
    "proj_vis_up.0.": "vision_up.0.",
    "proj_vis_up.1.": "vision_up.1.",
    "proj_text_down.0.": "text_down.",
    "proj_text_up.0.": "text_up.",
    "norm_pre_HSA.": "hsa_norm.",
    "hsa.self_attn.": "hsa_attention.",
    "hsa.linear.": "hsa_out.",
    "ca_V2T.multihead_attn.": "v2t_attention.",
    "ca_T2V.multihead_attn.": "t2v_attention.",
}

