"""The official SAMWISE frame preprocessing (its evaluation dataset + model input).

1. torchvision `Resize(1020, max_size=1024)` on the PIL image: PIL bilinear resampling of
   the uint8 frame to the size `resized_size` gives (uint8 result);
2. /255, then ImageNet mean / std per channel;
3. zero padding (in normalised units) on the bottom and right to 1024 x 1024.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


def resized_size(height: int, width: int, short: int = 1020, max_size: int = 1024) -> tuple[int, int]:
    """torchvision's Resize(short, max_size) output (H, W): the short side becomes
    `short` unless the long side would pass `max_size`, then the long side is max_size."""
    small, large = min(height, width), max(height, width)
    new_small, new_large = short, int(short * large / small)
    if new_large > max_size:
        new_small, new_large = int(max_size * new_small / new_large), max_size
    return (new_small, new_large) if height <= width else (new_large, new_small)


def preprocess_frame(frame: np.ndarray, image_size: int = 1024) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> ((3, S, S) float32 normalised and zero padded, (h, w) resized).

    S = `image_size`; at 1024 the resize is the official Resize(1020, max_size=1024);
    other sizes scale the short-side request alike (round(S * 1020 / 1024), max S).
    """
    from PIL import Image

    short = round(image_size * 1020 / 1024)
    h, w = resized_size(*frame.shape[:2], short=short, max_size=image_size)
    image = np.array(Image.fromarray(frame).resize((w, h), Image.Resampling.BILINEAR))
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
    return F.pad(x, (0, image_size - w, 0, image_size - h)), (h, w)
