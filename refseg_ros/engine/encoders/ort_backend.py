"""ONNX Runtime backends: `onnxruntime` (CPU or CUDA provider) and `tensorrt` (its
TensorRT execution provider), both on the file of `onnx_export`.

The provider list comes from what the installed onnxruntime offers
(`onnxruntime.get_available_providers()`): the CPU provider for a CPU engine, CUDA's for
a CUDA engine (the onnxruntime-gpu package), TensorRT's (falling back to CUDA's for any
node TensorRT does not take) for `tensorrt`. TensorRT goes through ONNX Runtime rather
than torch-tensorrt because a Jetson user can install it: NVIDIA's JetPack ships TensorRT
and the Jetson onnxruntime-gpu wheels are built against it, while torch-tensorrt must
match the exact torch build (docs/ENGINE.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import EncoderBackendUnavailableError
from .exported import MAX_BATCH, ExportedEncoder, output_names
from .onnx_export import ONNX_FILE, onnx_version

PRECISIONS = {"onnxruntime": ("fp32",), "tensorrt": ("fp32", "fp16", "bf16")}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EncoderBackendUnavailableError(
            "onnxruntime is not installed: pip install 'refseg_ros[runtimes]' (on NVIDIA machines "
            "onnxruntime-gpu; on a Jetson the onnxruntime-gpu wheel built for its JetPack)") from exc
    return onnxruntime


def versions(backend: str) -> dict[str, str]:
    """The libraries an entry of `backend` depends on, with their versions."""
    return {"torch": torch.__version__, "onnx": onnx_version(), "onnxruntime": _ort().__version__}


def check(backend: str, device: torch.device, precision: str) -> None:
    """Refuse what this machine cannot run.

    Raises EncoderBackendUnavailableError naming what is missing: onnxruntime or onnx not
    installed, no provider for `device` (CUDA's for a CUDA engine, TensorRT's for
    `tensorrt`, which needs a CUDA engine), or a precision the backend does not offer.
    """
    ort = _ort()
    onnx_version()
    available = ort.get_available_providers()
    if precision not in PRECISIONS[backend]:
        raise EncoderBackendUnavailableError(
            f"{backend} runs {', '.join(PRECISIONS[backend])} here, not {precision}")
    if backend == "tensorrt":
        if "TensorrtExecutionProvider" not in available:
            raise EncoderBackendUnavailableError(
                f"onnxruntime {ort.__version__} here offers no TensorrtExecutionProvider (it offers "
                f"{', '.join(available)}): install onnxruntime-gpu and TensorRT (JetPack has it) on an NVIDIA machine")
        if device.type != "cuda":
            raise EncoderBackendUnavailableError(f"tensorrt needs a CUDA device; the engine's device is {device}")
    elif device.type == "cuda" and "CUDAExecutionProvider" not in available:
        raise EncoderBackendUnavailableError(
            f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider for device {device} (it offers "
            f"{', '.join(available)}): install onnxruntime-gpu, or run the engine on the CPU")
    elif device.type not in ("cpu", "cuda"):
        raise EncoderBackendUnavailableError(f"onnxruntime runs on cpu or cuda devices, not {device}")


def providers(backend: str, device: torch.device, precision: str, directory: Path,
              image_size: int) -> list[Any]:
    """ONNX Runtime's provider list (names, or (name, options)) for the backend.

    CUDA runs without TF32 at fp32 (parity). TensorRT builds for batches 1 to MAX_BATCH
    (optimised for 1) and keeps its engine and timing caches in the entry's folder
    (`directory/trt`), so that only the first session of an entry pays the build.
    """
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    index = device.index if device.index is not None else torch.cuda.current_device()
    cuda = ("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0 if precision == "fp32" else 1})
    if backend != "tensorrt":
        return [cuda]
    cache = directory / "trt"
    cache.mkdir(exist_ok=True)
    shape = f"3x{image_size}x{image_size}"
    trt = {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
           "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
           "trt_fp16_enable": precision == "fp16", "trt_bf16_enable": precision == "bf16",
           "trt_profile_min_shapes": f"images:1x{shape}", "trt_profile_opt_shapes": f"images:1x{shape}",
           "trt_profile_max_shapes": f"images:{MAX_BATCH}x{shape}"}
    return [("TensorrtExecutionProvider", trt), cuda]


def open_encoder(backend: str, directory: Path, model: torch.nn.Module, device: torch.device,
                 precision: str, image_size: int) -> ExportedEncoder:
    """An ImageEncoder running `directory/encoder.onnx` on the backend's providers, with
    torch's current intra-op thread count on the CPU (the node's compute_threads) and no
    spinning between runs.

    Raises EncoderBackendUnavailableError when the session cannot be made (a provider
    that fails to load its libraries, say).
    """
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Its pool threads would otherwise spin on after each run, against torch's threads
    # running the rest of the step (and the node's frame intake) on the same cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chosen = providers(backend, device, precision, directory, image_size)
    try:
        session = ort.InferenceSession(str(directory / ONNX_FILE), options, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own types for missing libraries and bad files
        raise EncoderBackendUnavailableError(f"{backend}: onnxruntime could not open the encoder: {exc}") from exc
    names = output_names(model)
    used = session.get_providers()
    wanted = [p if isinstance(p, str) else p[0] for p in chosen]
    if used[0] != wanted[0]:  # onnxruntime falls back to the CPU quietly when a provider fails
        raise EncoderBackendUnavailableError(f"{backend}: onnxruntime did not start {wanted[0]} (it runs {used})")
    runner = _cuda_runner(session, names, device) if device.type == "cuda" else _cpu_runner(session, names)
    description = f"{backend}: onnxruntime {ort.__version__} ({', '.join(used)}), {precision}"
    return ExportedEncoder(backend, description, runner, model)


def _cpu_runner(session: Any, names: list[str]):
    def run(images: torch.Tensor) -> Sequence[torch.Tensor]:
        outputs = session.run(names, {"images": images.detach().cpu().numpy()})
        return [torch.from_numpy(o) for o in outputs]
    return run


def _cuda_runner(session: Any, names: list[str], device: torch.device):
    """Inputs and outputs stay on the GPU: bound to torch tensors (IO binding)."""
    index = device.index if device.index is not None else torch.cuda.current_device()

    def run(images: torch.Tensor) -> Sequence[torch.Tensor]:
        binding = session.io_binding()
        binding.bind_input("images", "cuda", index, np.float32, tuple(images.shape), images.data_ptr())
        for name in names:
            binding.bind_output(name, "cuda", index)
        torch.cuda.current_stream(device).synchronize()  # the input is written before onnxruntime reads it
        session.run_with_iobinding(binding)
        return [_to_torch(value, device) for value in binding.get_outputs()]
    return run


def _to_torch(value: Any, device: torch.device) -> torch.Tensor:
    """An onnxruntime OrtValue on the GPU as a torch tensor (through DLPack where the
    onnxruntime build has it, else through the host)."""
    to_dlpack = getattr(value, "to_dlpack", None)
    if to_dlpack is not None:
        return torch.from_dlpack(to_dlpack())
    return torch.from_numpy(value.numpy()).to(device)
