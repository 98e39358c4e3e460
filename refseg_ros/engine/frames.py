"""Camera frames in, normalised model input out; the only place frames are validated."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidFrameError

# ImageNet statistics, as SAM2 was trained with.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

# The two resize rules of FramePreprocessor (EngineConfig.preprocessing).
PREPROCESSING = ("device", "official")


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
    """Checks a frame, resizes it to the model's square input and normalises it.

    In: an H x W x 3 uint8 RGB array. Out: a (1, 3, S, S) float32 tensor on `device`,
    S = `image_size`, normalised with PIXEL_MEAN / PIXEL_STD. A frame already S x S is not
    resized by either rule, so both give the same input there. For other sizes:

    - ``"device"`` (default): the uint8 frame goes to the device as it is and is resized
      there in float32, bicubic with antialiasing, clamped to [0, 1]; a GPU robot does not
      pay for the resize on its CPU. Close to SAM2's own loader, not equal to it (PyTorch's
      bicubic kernel is not PIL's, and PIL rounds its result to uint8), so the model's
      output differs from SAM2VideoPredictor's (docs/ENGINE.md has the numbers).
    - ``"official"``: as sam2's video predictor loads a frame
      (``sam2.utils.misc._load_img_as_tensor``): PIL's bicubic resize of the uint8 frame
      to S x S on the CPU, then /255 and the normalisation. The model sees bit for bit
      what SAM2VideoPredictor feeds it for the same decoded pixels; the resize costs CPU
      time on every frame.
    """

    def __init__(self, image_size: int, device: torch.device, rule: str = "device"):
        if rule not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}; got {rule!r}")
        self.image_size = image_size
        self.device = device
        self.rule = rule
        self.mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (1, 3, S, S) float32 on the device, normalised."""
        check_frame(frame)
        square = frame.shape[:2] == (self.image_size, self.image_size)
        if self.rule == "official" and not square:
            frame = self._pil_resize(frame)
            square = True
        image = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device)
        # uint8 / 255 in float32 equals SAM2's float64 division rounded to float32 for
        # all 256 values, so the official rule needs no float64 step.
        image = image.permute(2, 0, 1).unsqueeze(0).float() / 255.0
        if not square:
            size = (self.image_size, self.image_size)
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
            image = image.clamp(0.0, 1.0)
        return (image - self.mean) / self.std

    def _pil_resize(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (S, S, 3) uint8 by PIL's bicubic filter (PIL's default for
        ``Image.resize``, which SAM2's loader relies on), on the CPU."""
        from PIL import Image

        resized = Image.fromarray(frame).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return np.array(resized)
