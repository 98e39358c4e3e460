"""Backends of the plain image-encoder pass (torch, ONNX Runtime, OpenVINO, TensorRT),
their on-disk cache and the parity gate a build passes before use (docs/ENGINE.md,
"Encoder backends")."""

from .base import BACKENDS, PRECISIONS, ImageEncoder, TorchEncoder
from .build import (build_encoder, check_backend, check_parity, installed_versions, prune_encoder_cache,
                    stderr_progress)
from .cache import CacheEntry, EntryKey, encoder_cache_dir, weights_digest
from .parity import TOLERANCES, compare, parity_input

__all__ = ["BACKENDS", "PRECISIONS", "TOLERANCES", "CacheEntry", "EntryKey", "ImageEncoder", "TorchEncoder",
           "build_encoder", "check_backend", "check_parity", "compare", "encoder_cache_dir", "installed_versions",
           "parity_input", "prune_encoder_cache", "stderr_progress", "weights_digest"]
