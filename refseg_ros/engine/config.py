"""Engine settings: which model, where it runs, and how memory is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class EngineConfig:
    """Everything needed to build an engine; plain values so YAML and CLI map onto it."""

    model: str = "sam2.1_hiera_t"  # a name from engine.model.MODEL_CONFIGS
    # An official {"model": state_dict} file; "auto" takes the weights cache's file for
    # `model` when there is one; None (or "auto" with an empty cache) = random weights.
    checkpoint: Optional[str] = None
    image_size: Optional[int] = None  # None keeps the config's size (1024)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    # How a frame becomes the model's square input (engine.frames.FramePreprocessor):
    # "device" resizes the uint8 frame on the model's device (float bicubic, antialiased);
    # "official" resizes it with PIL on the CPU exactly as sam2's SAM2VideoPredictor loads
    # frames, so that frames of any size give SAM2's output. Same result for frames that
    # are already image_size x image_size.
    preprocessing: str = "device"  # device | official
    compile: bool = False  # torch.compile the heavy modules (pays off on CUDA; slow to build on CPU)
    # What runs the plain image-encoder pass (engine.encoders): torch (the model's modules),
    # onnxruntime (CPU, or CUDA with onnxruntime-gpu), openvino (CPU) or tensorrt (ONNX
    # Runtime's TensorRT provider). A non-torch backend is exported once per weights and
    # size into the weights cache and used only after its parity check against torch.
    # Adapted passes (SAMWISE, a TTGA target's neck) always run on torch.
    encoder_backend: str = "torch"
    # The exported backends' precision: fp32, or opt-in fp16 / bf16 where the backend
    # runs them (docs/ENGINE.md gives the measured differences); torch follows `precision`.
    encoder_precision: str = "fp32"
    # A backend that cannot run here (not installed, no provider, failed parity): False
    # refuses it (EncoderBackendError); True runs the pass on torch and says so
    # (SegmentationEngine.encoder_note).
    encoder_backend_fallback: bool = False
    seed: int = 0  # seeds the random initialisation when no checkpoint is given
    # Memory policy. SAM2 writes every frame into memory; with keep_memory_when_absent the
    # frames on which a target is judged absent are not written, so an occluder cannot
    # push out the memories of the object.
    keep_memory_when_absent: bool = True
    max_obj_ptrs: int = 16  # object pointers visible to memory attention (SAM2: 16)
    max_cond_frames: int = -1  # pinned conditioning entries attended (-1: all, as SAM2)
    max_seeds: int = 4  # conditioning entries a proposer's seeds keep per target (oldest goes)
    occlusion_patience: int = 15  # absent frames before an occluded target counts as lost
    batch_targets: bool = True  # batch targets whose memory layouts match
    # step_many: the plain encoder passes of the streams stepped together run as one
    # batched call ((T, 3, S, S)); False: one call per frame (the same results).
    batch_cameras: bool = True
