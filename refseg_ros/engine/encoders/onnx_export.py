"""Export the plain pass (`exported.PlainPass`) to ONNX, with a dynamic batch axis.

torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`, opset 17):
it exports Hiera's windowed attention and the FPN neck as plain ONNX operators that ONNX
Runtime's CPU, CUDA and TensorRT providers all run (the measured parity is in
docs/ENGINE.md). ONNX Runtime and its TensorRT execution provider read the same file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import EncoderBackendUnavailableError
from .exported import PlainPass, output_names

ONNX_FILE = "encoder.onnx"
OPSET = 17


def onnx_version() -> str:
    """The installed onnx package's version.

    Raises EncoderBackendUnavailableError when onnx is not installed (torch's exporter needs it).
    """
    try:
        import onnx
    except ImportError as exc:
        raise EncoderBackendUnavailableError(
            "the onnx package is not installed (torch's ONNX export needs it): pip install 'refseg_ros[runtimes]'"
        ) from exc
    return onnx.__version__


def export_onnx(model: torch.nn.Module, directory: Path, image_size: int) -> list[str]:
    """Write `directory/encoder.onnx`: input "images" (T, 3, S, S) float32, T dynamic;
    outputs `exported.output_names(model)`, each with the same dynamic T. The model stays
    where it is (its device); the export traces one image of zeros.

    Returns the file names written (relative to `directory`).
    Raises EncoderBackendUnavailableError without the onnx package.
    """
    onnx_version()
    device = next(model.parameters()).device
    names = output_names(model)
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    axes = {"images": {0: "T"}, **{name: {0: "T"} for name in names}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python conditions on shapes
        torch.onnx.export(PlainPass(model).eval(), (example,), str(directory / ONNX_FILE), dynamo=False,
                          opset_version=OPSET, input_names=["images"], output_names=names, dynamic_axes=axes)
    return [ONNX_FILE]
