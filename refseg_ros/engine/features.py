"""One image-encoder pass per frame, in the token layout the rest of SAM2 expects."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrameFeatures:
    """Backbone output of one image, shared by every target of a stream.

    Token tensors are (H*W, 1, C), lowest resolution last, as SAM2 lays them out.
    """

    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]

    def top(self, batch: int) -> torch.Tensor:
        """Top-level feature tokens expanded to `batch` targets: (H*W, B, C)."""
        return self.vision_feats[-1].expand(-1, batch, -1)

    def top_pos(self, batch: int) -> torch.Tensor:
        return self.vision_pos[-1].expand(-1, batch, -1)

    def pix_feat(self, batch: int) -> torch.Tensor:
        """Top-level features as a map: (B, C, H, W)."""
        h, w = self.feat_sizes[-1]
        tokens = self.vision_feats[-1]
        return tokens.permute(1, 2, 0).reshape(1, -1, h, w).expand(batch, -1, -1, -1)

    def high_res(self, batch: int) -> list[torch.Tensor] | None:
        """The finer levels the mask decoder upsamples with, or None without them."""
        if len(self.vision_feats) == 1:
            return None
        maps = []
        for tokens, (h, w) in zip(self.vision_feats[:-1], self.feat_sizes[:-1]):
            maps.append(tokens.permute(1, 2, 0).reshape(1, -1, h, w).expand(batch, -1, -1, -1))
        return maps


def encode_image(model: torch.nn.Module, image: torch.Tensor) -> FrameFeatures:
    """Run the image encoder on a (1, 3, S, S) normalised image."""
    backbone_out = model.forward_image(image)
    levels = model.num_feature_levels
    maps = backbone_out["backbone_fpn"][-levels:]
    pos = backbone_out["vision_pos_enc"][-levels:]
    return FrameFeatures(
        vision_feats=[m.flatten(2).permute(2, 0, 1) for m in maps],
        vision_pos=[p.flatten(2).permute(2, 0, 1) for p in pos],
        feat_sizes=[(p.shape[-2], p.shape[-1]) for p in pos],
    )
