"""One image-encoder pass per frame, in the token layout the rest of SAM2 expects.

Frames of several streams may share one pass (`encode_images` takes T images; the
engine's `step_many` batches the cameras of one tick).

The pass runs in two steps, as SAM2's `ImageEncoder` does: the Hiera trunk, then the FPN
neck (with the scalp and the mask decoder's conv_s0/conv_s1 projections that
`SAM2Base.forward_image` applies). The trunk's stage maps stay on the `FrameFeatures`, so
an adapter with a neck of its own (a target's test-time tuned copy) can reuse the shared
trunk pass and run only its neck (`neck_features(model, features.trunk, neck)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass
class FrameFeatures:
    """Backbone output of one image, shared by every target of a stream.

    Token tensors are (H*W, 1, C), lowest resolution last, as SAM2 lays them out.
    `trunk`, when the plain pass made them, are the Hiera trunk's four stage maps
    (1, C_i, h_i, w_i), finest first (strides 4, 8, 16, 32), the neck's input; None
    otherwise (e.g. an adapted pass whose trunk maps are not the plain trunk's).
    """

    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]
    trunk: Optional[list[torch.Tensor]] = None

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


def encode_images(model: torch.nn.Module, images: torch.Tensor) -> list[FrameFeatures]:
    """Run the image encoder on T images at once: (T, 3, S, S) normalised float, T >= 1.

    The plain pass of every frame goes through here (`encode_image` is this with T=1),
    so this is the one function an encoder backend (another runtime for the trunk and
    the neck) replaces. Trunk, then `neck_features`: the same operations as
    `model.forward_image`, so the features of T=1 are bit-identical to it; a batch of T
    gives each image's features up to the kernels' rounding (a batched convolution or
    matmul may sum in another order: about 1e-6 in float32 on the CPU). Returns one
    FrameFeatures per image, in order, each with its own (1, C_i, h_i, w_i) views of the
    trunk's stage maps in `trunk`. `model.forward_image` and `model.image_encoder.forward`
    are not called: a wrapper around either (torch.compile, a test's guard) must wrap
    the trunk and the neck.

    Raises ValueError for anything but a (T, 3, S, S) tensor with T >= 1.
    """
    if images.dim() != 4 or images.shape[0] < 1 or images.shape[1] != 3:
        raise ValueError(f"images must be (T, 3, S, S) with T >= 1, got {tuple(images.shape)}")
    trunk = model.image_encoder.trunk(images)
    features = neck_features(model, trunk)
    for i, f in enumerate(features):
        f.trunk = [level[i:i + 1] for level in trunk]
    return features


def encode_image(model: torch.nn.Module, image: torch.Tensor) -> FrameFeatures:
    """Run the image encoder on a (1, 3, S, S) normalised image: `encode_images` of one."""
    return encode_images(model, image)[0]


def neck_features(model: torch.nn.Module, trunk_outputs: list[torch.Tensor],
                  neck: Optional[torch.nn.Module] = None) -> list[FrameFeatures]:
    """SAM2's FPN neck, scalp and conv_s0/conv_s1 on the trunk's stage maps.

    trunk_outputs: the four (T, C_i, h_i, w_i) stage maps of T images, finest first (what
    `model.image_encoder.trunk` returns, or an adapted trunk's equivalent); `neck`: the FPN
    neck to run, `model.image_encoder.neck` when None (a caller may pass a tuned copy of
    it; the scalp and conv_s0/conv_s1 are always the model's). Returns one FrameFeatures
    per image (`trunk` left None), exactly as `SAM2Base.forward_image` + the flattening
    of `encode_image` lay them out: (H*W, 1, C) tokens per level.
    """
    encoder = model.image_encoder
    maps, pos = (encoder.neck if neck is None else neck)(trunk_outputs)
    if encoder.scalp > 0:
        maps, pos = maps[: -encoder.scalp], pos[: -encoder.scalp]
    if model.use_high_res_features_in_sam:
        maps[0] = model.sam_mask_decoder.conv_s0(maps[0])
        maps[1] = model.sam_mask_decoder.conv_s1(maps[1])
    levels = model.num_feature_levels
    return level_features(maps[-levels:], pos[-levels:])


def level_features(maps: Sequence[torch.Tensor], pos: Sequence[torch.Tensor]) -> list[FrameFeatures]:
    """Lay out the levels the mask decoder and memory attention read, one FrameFeatures per image.

    maps: per level, the (T, C_l, h_l, w_l) feature maps of T images (after conv_s0/conv_s1
    for the finer levels), finest first; pos: per level, its positional encoding, (T or 1,
    C_pos, h_l, w_l) (a batch of one is shared by every image). Returns T FrameFeatures
    with (h_l*w_l, 1, C) tokens per level, `trunk` None.
    """
    sizes = [(p.shape[-2], p.shape[-1]) for p in pos]
    return [FrameFeatures(
        vision_feats=[m[i:i + 1].flatten(2).permute(2, 0, 1) for m in maps],
        vision_pos=[(p[i:i + 1] if p.shape[0] > 1 else p).flatten(2).permute(2, 0, 1) for p in pos],
        feat_sizes=sizes,
    ) for i in range(maps[0].shape[0])]
