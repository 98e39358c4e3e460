"""The SAMWISE adapter: everything an official checkpoint holds besides SAM2.

- `text_encoder`: RoBERTa-base (frozen);
- `cmt`: three CMT adapters after Hiera stages 2, 3, 4 (Sec. 3.2), HSA windows 8/4/2;
- `text_prompt`: the 768 -> 256 -> 256 -> 256 MLP (ReLU) that turns the caption's
  first-token state into one extra sparse prompt token for SAM2's mask decoder
  (official name `sam.sam_prompt_encoder.project_text`);
- `cme`: the conditional memory encoder (Sec. 3.3).

The trainable parameters (official rule: names with `adapter`, `conditional_memory_encoder`
or `project_text`) are the CMT adapters + text prompt MLP (4,904,512 for hiera_b+) and
the CME (331,394).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .cme import ConditionalMemoryEncoder
from .cmt import ADAPTER_DIM, CrossModalTemporalAdapter
from .roberta import HIDDEN, RobertaText

HSA_PATCH_SIZES = (8, 4, 2)


class TextPromptMLP(nn.Module):
    """(..., 768) caption state -> (..., 256) prompt token; 3 linear layers, ReLU between."""

    def __init__(self, in_dim: int = HIDDEN, dim: int = 256):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)])

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            state = layer(state)
            if i < len(self.layers) - 1:
                state = F.relu(state)
        return state


class SamwiseAdapter(nn.Module):
    """RoBERTa + CMT adapters + text prompt MLP + CME, for a Hiera trunk whose stages
    2, 3, 4 have `stage_channels` channels (hiera_b+: 224, 448, 896)."""

    def __init__(self, stage_channels=(224, 448, 896), patch_sizes=HSA_PATCH_SIZES,
                 adapter_dim: int = ADAPTER_DIM, prompt_dim: int = 256):
        super().__init__()
        self.text_encoder = RobertaText()
        self.cmt = nn.ModuleList(
            CrossModalTemporalAdapter(c, HIDDEN, adapter_dim, p) for c, p in zip(stage_channels, patch_sizes)
        )
        self.text_prompt = TextPromptMLP(HIDDEN, prompt_dim)
        self.cme = ConditionalMemoryEncoder(prompt_dim)
        self.requires_grad_(False)
        for module in (self.cmt, self.text_prompt, self.cme):
            module.requires_grad_(True)

    def trainable_counts(self) -> dict[str, int]:
        """Parameter counts of the trainable groups (official grouping)."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        adapters, prompt, cme = count(self.cmt), count(self.text_prompt), count(self.cme)
        return {"cmt_adapters": adapters, "project_text": prompt,
                "adapters_plus_project_text": adapters + prompt, "conditional_memory_encoder": cme}
