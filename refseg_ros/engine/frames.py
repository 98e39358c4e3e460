"""Camera frames in, normalised model input out; the only place frames are validated."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidFrameError

# ImageNet statistics, as SAM2 was trained with.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def check_frame(frame: np.ndarray) -> None:
    """Reject anything but a non-empty H x W x 3 uint8 RGB array."""
    if not isinstance(frame, np.ndarray):
        raise InvalidFrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise InvalidFrameError(f"frame must be uint8, got {frame.dtype}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InvalidFrameError(f"frame must be H x W x 3 (RGB), got shape {frame.shape}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise InvalidFrameError(f"frame is too small: {frame.shape[1]}x{frame.shape[0]}")


class FramePreprocessor:
    """Resizes to the model's square input and normalises, on the model's device.

    Resizing is bicubic with antialiasing (as PIL does for SAM2's own loaders), done on
    the device so that a GPU robot does not pay for it on the CPU.
    """

    def __init__(self, image_size: int, device: torch.device):
        self.image_size = image_size
        self.device = device
        self.mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        check_frame(frame)
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        image = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
        if image.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
            image = image.clamp(0.0, 1.0)
        return (image - self.mean) / self.std
