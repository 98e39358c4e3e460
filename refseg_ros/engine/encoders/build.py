"""Build the engine's `ImageEncoder` for a backend: from the cache when an accepted entry
is there, else export, open, check parity against torch, and accept it into the cache.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import EncoderBackendUnavailableError, EncoderParityError
from ..features import encode_images
from . import openvino_backend, ort_backend
from .base import BACKENDS, PRECISIONS, ImageEncoder, TorchEncoder
from .cache import CacheEntry, EntryKey, encoder_cache_dir, folder_bytes, remove_entries, stale_entries, weights_digest
from .onnx_export import export_onnx
from .parity import compare, parity_input

Progress = Callable[[str], None]

# backend -> (module with check / versions / open_encoder, exporter)
_RUNTIMES = {
    "onnxruntime": (ort_backend, export_onnx),
    "tensorrt": (ort_backend, export_onnx),
    "openvino": (openvino_backend, openvino_backend.export_ir),
}


def stderr_progress(text: str) -> None:
    """Progress of a long build, one line on stderr."""
    print(f"encoder build: {text}", file=sys.stderr, flush=True)


def check_backend(backend: str, device: torch.device, precision: str = "fp32") -> None:
    """Whether `backend` can run here at `precision` for an engine on `device`, without
    building anything.

    Raises ValueError for an unknown backend or precision (or a reduced precision for
    torch, whose precision is the engine's `precision`), EncoderBackendUnavailableError
    with the reason for one this machine cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"encoder_backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"encoder_precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if backend == "torch":
        if precision != "fp32":
            raise ValueError("encoder_precision applies to the exported backends; torch follows `precision`")
        return
    _RUNTIMES[backend][0].check(backend, device, precision)


def build_encoder(model: torch.nn.Module, model_name: str, backend: str, precision: str = "fp32",
                  directory: Optional[Path] = None, progress: Optional[Progress] = stderr_progress) -> ImageEncoder:
    """The plain pass of `model` (on its device, weights final) on `backend`.

    torch: the model's modules. Otherwise the cache entry for (model_name, image size,
    precision, backend, device kind, weights digest, library versions) under
    `encoder_cache_dir(directory)` is used when accepted and intact; a missing, stale or
    corrupt one is built again: export (ONNX for onnxruntime and tensorrt, IR for
    openvino), open, compare with torch on the fixed parity input (`parity.compare`),
    and only then recorded as accepted. `progress` gets a line per stage of a build (None: silent).

    Raises ValueError (unknown backend or precision), EncoderBackendUnavailableError (not
    installed or cannot run here: see `check_backend`; or the runtime failed to export or
    open the encoder), EncoderParityError (the build's features differ from torch's
    beyond the tolerance; nothing is accepted).
    """
    device = next(model.parameters()).device
    check_backend(backend, device, precision)
    if backend == "torch":
        return TorchEncoder(model)
    runtime, exporter = _RUNTIMES[backend]
    image_size = int(model.image_size)
    say = progress or (lambda text: None)
    key = EntryKey(model_name, image_size, precision, backend, device.type, weights_digest(model),
                   tuple(sorted(runtime.versions(backend).items())))
    entry = CacheEntry(encoder_cache_dir(directory), key)
    problem = entry.problem()
    if problem is None:
        return runtime.open_encoder(backend, entry.dir, model, device, precision, image_size)
    say(f"{backend} for {model_name} at {image_size} ({precision}): cache entry {entry.dir.name}: {problem}; "
        "building (a minute or more on a CPU)")
    start = time.monotonic()
    entry.reset()
    try:
        files = exporter(model, entry.dir, image_size)
    except EncoderBackendUnavailableError:
        raise
    except Exception as exc:  # an exporter's own failure (an unsupported operator, say)
        raise EncoderBackendUnavailableError(f"{backend}: the export failed: {type(exc).__name__}: {exc}") from exc
    say(f"exported in {time.monotonic() - start:.0f} s; opening and checking parity with torch")
    encoder = runtime.open_encoder(backend, entry.dir, model, device, precision, image_size)
    bound = "tf32" if backend == "tensorrt" and precision == "fp32" else precision
    try:
        parity = check_parity(model, encoder, bound)
    except ValueError as exc:  # another number of images, levels or shapes
        entry.reset()
        raise EncoderParityError(f"{backend} ({precision}) build refused: {exc}") from exc
    if not parity.ok:
        entry.reset()
        raise EncoderParityError(f"{backend} ({precision}) build refused, its features differ from torch's: "
                                 f"{parity.summary()}")
    entry.accept(files, parity.as_dict(), {"description": encoder.description})
    say(f"accepted after {time.monotonic() - start:.0f} s ({parity.summary()}): {entry.dir}")
    superseded = stale_entries(entry.dir.parent, installed_versions, like=key)
    if superseded:
        freed = remove_entries(superseded)
        say(f"removed {len(superseded)} entry(ies) this build supersedes ({freed / 1e6:.0f} MB): "
            + "; ".join(f"{folder.name}: {why}" for folder, why in superseded))
    return encoder


def installed_versions(backend: str) -> Optional[dict[str, str]]:
    """The library versions a `backend` entry built now would be keyed by; None for torch
    and for a runtime that is not installed."""
    if backend not in _RUNTIMES:
        return None
    try:
        return _RUNTIMES[backend][0].versions(backend)
    except EncoderBackendUnavailableError:
        return None


def prune_encoder_cache(directory: Optional[Path] = None, dry_run: bool = False) -> tuple[list[tuple[Path, str]], int]:
    """Remove (or with `dry_run` only list) every entry under `encoder_cache_dir(directory)`
    that this install cannot use (`cache.stale_entries`). Returns the (folder, why) pairs
    and the bytes freed (or that would be)."""
    stale = stale_entries(encoder_cache_dir(directory), installed_versions)
    if dry_run:
        return stale, sum(folder_bytes(folder) for folder, _ in stale)
    return stale, remove_entries(stale)


def check_parity(model: torch.nn.Module, encoder: ImageEncoder, precision: str):
    """`parity.compare` of `encoder` and the torch pass on the fixed parity input (fp32,
    no autocast), with the bound of `precision` (a key of `parity.TOLERANCES`). Returns
    the `parity.Parity`."""
    images = parity_input(int(model.image_size), next(model.parameters()).device)
    with torch.inference_mode(), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        reference = encode_images(model, images)
        candidate = encoder.encode(images)
    return compare(reference, candidate, precision)
