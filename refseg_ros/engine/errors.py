"""Typed errors raised by the engine; each names what was wrong with the input."""


class EngineError(ValueError):
    """Base class: the request was rejected and the engine state is unchanged."""


class InvalidFrameError(EngineError):
    """A frame of the wrong shape, dtype or size."""


class InvalidPromptError(EngineError):
    """An empty or out-of-frame box, an all-zero mask, malformed points."""


class PromptBelowResolutionError(InvalidPromptError):
    """A prompt that is valid on its image but vanishes or degenerates at the model's
    resolution: a mask empty once scaled to the model's input or to SAM2's mask-prompt
    size (image_size / 4), a box under one model pixel wide or high, an object click and
    a background click less than one model pixel apart. The message names the size the
    prompt had there and the size it would need.
    """


class UnknownStreamError(EngineError, KeyError):
    """A stream id that was never added (or was removed)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownTargetError(EngineError, KeyError):
    """A target id that the stream does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DuplicateTargetError(EngineError):
    """A target id that the stream already holds."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or does not match the model config."""


class StepsFailed(RuntimeError):
    """`SegmentationEngine.step_many`: the stages of some streams raised; the others were
    stepped. Not an EngineError: the engine's state did change (the streams in `results`
    moved on; a failed stream's frame counter did not).

    Attributes:
        results: the StepResults of the streams that were stepped, in the call's order.
        failures: stream id -> the exception its stages raised (with its traceback).
    """

    def __init__(self, results: list, failures: dict):
        self.results = results
        self.failures = failures
        named = "; ".join(f"stream {s!r}: {type(e).__name__}: {e}" for s, e in failures.items())
        super().__init__(f"{len(failures)} of {len(results) + len(failures)} streams failed: {named}")


class EncoderBackendError(RuntimeError):
    """An image-encoder backend (EngineConfig.encoder_backend) that cannot serve the
    engine; the message says why and what would fix it. The engine keeps no half-built
    backend."""


class EncoderBackendUnavailableError(EncoderBackendError):
    """The backend's runtime is not installed, offers no provider for the engine's
    device, or does not run the requested precision on this machine."""


class EncoderParityError(EncoderBackendError):
    """A build of the backend whose features on the fixed parity input differ from the
    torch encoder's by more than the precision's tolerance (engine.encoders.parity); it
    was not accepted into the cache."""
