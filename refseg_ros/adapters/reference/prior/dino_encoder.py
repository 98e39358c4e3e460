"""DINOv2 patch features of whole camera frames, for the reference-acquisition prior.

A `DinoEncoder` wraps any transformers `Dinov2Model` (loaded from a local folder by
`load_dinov2`, or built in memory, e.g. FSSAM's `dino.build_dinov2`). A frame is resized,
whole and without keeping its aspect ratio (as SAM2 squares its input), to a square of
`input_size` pixels, normalised with ImageNet statistics and run once; the last layer's
LayerNorm-ed patch tokens (`dino.patch_features`) form a (C, h, w) grid, h = w =
input_size / patch_size. Grid cell (r, c) covers frame pixels
[c W / w, (c + 1) W / w) x [r H / h, (r + 1) H / h).

Nothing is downloaded: `load_dinov2` reads a folder written by `save_pretrained` (e.g. a
copy of facebook/dinov2-base) with `local_files_only=True`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..dino import PIXEL_MEAN, PIXEL_STD, patch_features


def load_dinov2(source: Union[str, os.PathLike, torch.nn.Module],
                device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """A `Dinov2Model` in eval mode on `device`, from a local folder or as given.

    source: a folder holding `config.json` and the weights as `save_pretrained` writes
    them, or a `transformers.Dinov2Model` instance (returned moved to `device`, in eval
    mode). Raises FileNotFoundError when the folder or its config.json does not exist,
    TypeError for a module that is not a `Dinov2Model`, and whatever transformers raises
    for unreadable weights.
    """
    from transformers import Dinov2Model

    if isinstance(source, torch.nn.Module):
        if not isinstance(source, Dinov2Model):
            raise TypeError(f"expected a transformers Dinov2Model, got {type(source).__name__}")
        return source.to(device).eval()
    folder = Path(source)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no DINOv2 model folder at {folder} (config.json missing)")
    model = Dinov2Model.from_pretrained(str(folder), local_files_only=True)
    return model.to(device).eval()


class DinoEncoder:
    """Frames (H, W, 3) uint8 RGB -> DINOv2 patch features (1, C, h, w) float32.

    model: a `Dinov2Model` (or a folder for `load_dinov2`). input_size: the square side,
    in pixels, frames are resized to; a multiple of the patch size. Default: the model's
    `config.image_size` rounded down to a multiple of the patch (518 -> a 37 x 37 grid
    for the released DINOv2 models; their position table then needs no interpolation).
    Raises ValueError for an input size that is not a positive multiple of the patch.
    """

    def __init__(self, model: Union[str, os.PathLike, torch.nn.Module],
                 input_size: Optional[int] = None, device: Union[str, torch.device, None] = None):
        if device is None:
            device = (next(model.parameters()).device if isinstance(model, torch.nn.Module)
                      else torch.device("cpu"))
        self.model = load_dinov2(model, device)
        self.device = torch.device(device)
        patch = self.model.config.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        if input_size is None:
            input_size = (int(self.model.config.image_size) // self.patch_size) * self.patch_size
        if input_size <= 0 or input_size % self.patch_size != 0:
            raise ValueError(f"DINOv2 input size must be a positive multiple of the patch "
                             f"({self.patch_size} px), got {input_size}")
        self.input_size = int(input_size)
        self._mean = torch.tensor(PIXEL_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(PIXEL_STD, device=self.device).view(1, 3, 1, 1)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the feature grid, in patches."""
        side = self.input_size // self.patch_size
        return side, side

    @property
    def channels(self) -> int:
        """C, the feature dimension (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, input_size, input_size) float32 on the device:
        /255, bilinear with antialiasing (align_corners=False), then ImageNet mean/std.

        Raises ValueError for anything but a non-empty H x W x 3 uint8 array.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
            shape = getattr(image, "shape", None)
            dtype = getattr(image, "dtype", type(image).__name__)
            raise ValueError(f"an image must be H x W x 3 uint8 RGB, got {shape} {dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        tensor = tensor.permute(2, 0, 1)[None].float() / 255.0
        size = (self.input_size, self.input_size)
        if tensor.shape[-2:] != size:
            tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                                   antialias=True)
        return (tensor - self._mean) / self._std

    @torch.inference_mode()
    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, C, h, w) float32 patch features on the device."""
        pixels = self.preprocess(image).to(next(self.model.parameters()).dtype)
        return patch_features(self.model, pixels).float()


def as_encoder(encoder: Union[DinoEncoder, torch.nn.Module, str, os.PathLike]) -> DinoEncoder:
    """`encoder` itself if it is a DinoEncoder, else a DinoEncoder around it (default size)."""
    return encoder if isinstance(encoder, DinoEncoder) else DinoEncoder(encoder)
