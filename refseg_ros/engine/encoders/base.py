"""The image-encoder seam: what runs the plain pass, and its torch implementation.

The plain pass (trunk + FPN neck + scalp + conv_s0/conv_s1, `features.encode_images`) is
the one every target without an adapted pass shares; the engine calls it through an
`ImageEncoder`, built for `EngineConfig.encoder_backend` (`encoders.build`). Adapted
passes (SAMWISE's adapters, a TTGA target's tuned neck) always run on torch.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ..features import FrameFeatures, encode_images

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16")


class ImageEncoder(Protocol):
    """Runs the plain image-encoder pass on a batch of images.

    name: the backend ("torch", "onnxruntime", ...); description: one line for logs and
    status (runtime, version, provider, precision).
    """

    name: str
    description: str

    def encode(self, images: torch.Tensor) -> list[FrameFeatures]:
        """Encode a (T, 3, S, S) float batch of normalised images on the engine's device.

        Returns T FrameFeatures, in order, with (h*w, 1, C) tokens per level laid out as
        `features.level_features` does, and `trunk` holding each image's four Hiera
        stage maps (1, C_i, h_i, w_i) (a TTGA target runs its own neck on them).
        """


class TorchEncoder:
    """The model's own modules, eagerly (or as torch.compile wrapped them)."""

    name = "torch"

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.description = "torch (the model's modules)"

    def encode(self, images: torch.Tensor) -> list[FrameFeatures]:
        """`features.encode_images` on (T, 3, S, S) images; see `ImageEncoder.encode`."""
        return encode_images(self.model, images)
