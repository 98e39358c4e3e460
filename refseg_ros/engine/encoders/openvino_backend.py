"""OpenVINO backend (CPU): the torch module converted directly (`openvino.convert_model`),
saved as OpenVINO IR (encoder.xml + encoder.bin) in the cache entry.

Converting the module rather than reading the ONNX file needs no onnx package and is the
route measured first here (docs/ENGINE.md). The inference precision is always given
(`INFERENCE_PRECISION_HINT`): on a CPU with bf16 units OpenVINO otherwise runs an fp32
model in bf16 (max |diff| ~0.03 on hiera_t at 256 here), which the parity gate refuses.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import EncoderBackendUnavailableError
from .exported import ExportedEncoder, PlainPass

IR_FILES = ("encoder.xml", "encoder.bin")
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}  # what the CPU plugin must report for a reduced precision


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise EncoderBackendUnavailableError(
            "openvino is not installed: pip install 'refseg_ros[runtimes]'") from exc
    return openvino


def versions(backend: str) -> dict[str, str]:
    """The libraries an entry depends on, with their versions."""
    return {"torch": torch.__version__, "openvino": _ov().__version__}


def check(backend: str, device: torch.device, precision: str) -> None:
    """Refuse what this machine cannot run.

    Raises EncoderBackendUnavailableError: openvino not installed; an engine device that
    is not the CPU (this backend runs the encoder on the CPU, and copying features to a
    GPU engine would defeat it); a reduced precision the CPU has no units for.
    """
    ov = _ov()
    if device.type != "cpu":
        raise EncoderBackendUnavailableError(
            f"openvino runs the encoder on the CPU; the engine's device is {device} (use onnxruntime or tensorrt)")
    if precision in CAPABILITY:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if CAPABILITY[precision] not in caps:
            raise EncoderBackendUnavailableError(
                f"this CPU runs no {precision} in OpenVINO (its capabilities: {', '.join(caps)})")


def export_ir(model: torch.nn.Module, directory: Path, image_size: int) -> list[str]:
    """Convert `exported.PlainPass` with a dynamic batch axis and save it as IR (fp32
    weights) in `directory`. Returns the file names written."""
    ov = _ov()
    example = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python conditions on shapes
        converted = ov.convert_model(PlainPass(model).eval(), example_input=example,
                                     input=[ov.PartialShape([-1, 3, image_size, image_size])])
    ov.save_model(converted, str(directory / IR_FILES[0]), compress_to_fp16=False)
    return list(IR_FILES)


def open_encoder(backend: str, directory: Path, model: torch.nn.Module, device: torch.device,
                 precision: str, image_size: int) -> ExportedEncoder:
    """An ImageEncoder running the IR on the CPU plugin, at `precision`, with torch's
    current intra-op thread count and one stream (latency, not throughput)."""
    ov = _ov()
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "INFERENCE_PRECISION_HINT": HINTS[precision],
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    try:
        compiled = core.compile_model(core.read_model(str(directory / IR_FILES[0])), "CPU", config)
    except Exception as exc:  # openvino raises RuntimeError subclasses of its own
        raise EncoderBackendUnavailableError(f"openvino could not compile the encoder: {exc}") from exc
    request = compiled.create_infer_request()
    count = len(compiled.outputs)

    def run(images: torch.Tensor) -> Sequence[torch.Tensor]:
        results = request.infer({0: images.detach().cpu().numpy()}, share_inputs=True)
        # copies: the request reuses its output buffers on the next call
        return [torch.from_numpy(results[i].copy()) for i in range(count)]

    description = f"openvino {ov.__version__.split('-')[0]} (CPU), {precision}"
    return ExportedEncoder(backend, description, run, model)
