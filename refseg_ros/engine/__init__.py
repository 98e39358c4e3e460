"""Streaming SAM2 engine: tensors only, no ROS."""

from .config import EngineConfig
from .engine import SegmentationEngine
from .errors import (CheckpointError, DuplicateTargetError, EncoderBackendError, EncoderBackendUnavailableError,
                     EncoderParityError, EngineError, InvalidFrameError, InvalidPromptError,
                     PromptBelowResolutionError, StepsFailed, UnknownStreamError, UnknownTargetError)
from .types import (BoxPrompt, MaskPrompt, PointsPrompt, Prompt, StepResult, TargetResult,
                    TargetState)

__all__ = [
    "BoxPrompt", "CheckpointError", "DuplicateTargetError", "EncoderBackendError", "EncoderBackendUnavailableError",
    "EncoderParityError", "EngineConfig", "EngineError", "InvalidFrameError",
    "InvalidPromptError", "MaskPrompt", "PointsPrompt", "Prompt", "PromptBelowResolutionError",
    "SegmentationEngine",
    "StepResult", "StepsFailed", "TargetResult", "TargetState", "UnknownStreamError", "UnknownTargetError",
]
