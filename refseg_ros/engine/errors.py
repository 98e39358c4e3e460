"""Typed errors raised by the engine; each names what was wrong with the input."""


class EngineError(ValueError):
    """Base class: the request was rejected and the engine state is unchanged."""


class InvalidFrameError(EngineError):
    """A frame of the wrong shape, dtype or size."""


class InvalidPromptError(EngineError):
    """An empty or out-of-frame box, an all-zero mask, malformed points."""


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
