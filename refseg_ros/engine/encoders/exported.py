"""The plain pass as one exportable module, and an `ImageEncoder` over a runtime that runs it.

`PlainPass` computes, from a (T, 3, S, S) batch, exactly what `features.encode_images`
computes except the positional encodings: the levels the decoder reads (the neck's maps
after the scalp, the finer two through conv_s0/conv_s1) and the trunk's four stage maps,
as one flat tuple. The trunk maps are extra outputs so that a TTGA target can run its
tuned neck on the exported pass's trunk (they are computed anyway; returning them costs a
copy). The positional encodings depend only on the maps' sizes (SAM2's
PositionEmbeddingSine), so `ExportedEncoder` makes them once with the model's own module
instead of exporting them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..features import FrameFeatures, level_features

# Most images one call of a runtime takes; larger batches are split (a TensorRT profile's maximum).
MAX_BATCH = 8


class PlainPass(torch.nn.Module):
    """The plain image-encoder pass as a module of one input, for export.

    forward: images (T, 3, S, S) float32 -> (level_0, ..., level_{L-1}, trunk_0, ..., trunk_3),
    levels finest first, (T, C_l, h_l, w_l) each; trunk maps (T, C_i, h_i, w_i), strides
    4, 8, 16, 32. L is `model.num_feature_levels`.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        encoder = model.image_encoder
        trunk = encoder.trunk(images)
        maps, _ = encoder.neck(trunk)
        maps = list(maps)
        if encoder.scalp > 0:
            maps = maps[: -encoder.scalp]
        if model.use_high_res_features_in_sam:
            maps[0] = model.sam_mask_decoder.conv_s0(maps[0])
            maps[1] = model.sam_mask_decoder.conv_s1(maps[1])
        return tuple(maps[-model.num_feature_levels:]) + tuple(trunk)


def output_names(model: torch.nn.Module) -> list[str]:
    """Names of `PlainPass`'s outputs: level0.., then trunk0..trunk3."""
    return [f"level{i}" for i in range(model.num_feature_levels)] + [f"trunk{i}" for i in range(4)]


Runner = Callable[[torch.Tensor], Sequence[torch.Tensor]]


class ExportedEncoder:
    """An `ImageEncoder` whose pass a runtime runs: `runner` maps (T, 3, S, S) float32
    images (T <= MAX_BATCH) to `PlainPass`'s outputs as float32 tensors on the engine's
    device."""

    def __init__(self, name: str, description: str, runner: Runner, model: torch.nn.Module):
        self.name = name
        self.description = description
        self.runner = runner
        self.levels = int(model.num_feature_levels)
        self._position = model.image_encoder.neck.position_encoding
        self._pos: dict[tuple[int, int], torch.Tensor] = {}

    def encode(self, images: torch.Tensor) -> list[FrameFeatures]:
        """See `ImageEncoder.encode`; images are cast to float32 for the runtime."""
        images = images.float().contiguous()
        features: list[FrameFeatures] = []
        for start in range(0, images.shape[0], MAX_BATCH):
            outputs = self.runner(images[start:start + MAX_BATCH])
            levels, trunk = list(outputs[:self.levels]), list(outputs[self.levels:])
            chunk = level_features(levels, [self._pos_of(m) for m in levels])
            for i, frame in enumerate(chunk):
                frame.trunk = [t[i:i + 1] for t in trunk]
            features += chunk
        return features

    def _pos_of(self, level: torch.Tensor) -> torch.Tensor:
        """The (1, C_pos, h, w) positional encoding of a level's size (made once)."""
        key = (int(level.shape[-2]), int(level.shape[-1]))
        if key not in self._pos:
            self._pos[key] = self._position(level[:1]).float()
        return self._pos[key]
