"""Grounding beside tracking: `GroundingWorker` runs the detector on a `LatestWorker`
(`refseg_ros.adapters.latest_worker`): one background thread, the latest request per key
only (keys in the order their mailbox was filled), each result handed over once, and
the caller (the engine's step, once per frame) never waits for the detector. The frame
is copied when submitted. An exception from the detector becomes the result's `error`;
the thread carries on with the next request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional, Protocol

import numpy as np

from refseg_ros.adapters.latest_worker import LatestWorker

from .detection import Detection


class Detector(Protocol):
    """Anything with GroundingDetector's `detect`."""

    def detect(self, image: np.ndarray, caption: str) -> list[Detection]:
        ...


@dataclass(frozen=True)
class GroundingResult:
    """A finished grounding request.

    - `key`: the key it was submitted under (e.g. (stream id, target id));
    - `stamp`: the stamp of the frame it ran on (the caller's units, e.g. seconds);
    - `caption`: the caption it looked for;
    - `detections`: the detector's answer, best first; empty when it failed;
    - `seconds`: wall-clock time `detect` took, seconds;
    - `error`: None, or "<ExceptionType>: <message>" when `detect` raised.
    """

    key: Hashable
    stamp: float
    caption: str
    detections: list[Detection] = field(default_factory=list)
    seconds: float = 0.0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the detector answered (possibly with no detections)."""
        return self.error is None


class GroundingWorker:
    """Runs `detector.detect` on a background thread, latest request per key only (a
    `LatestWorker` whose item is the frame and its caption).

    Thread-safe: submit, poll, pending, cancel and the counters may be called from any
    thread; none of them waits for a detection. The thread is a daemon, started here.
    """

    def __init__(self, detector: Detector, name: str = "refseg-grounding") -> None:
        """Start the thread (named `name`) that serves `detector`."""
        self._detector = detector
        self._worker = LatestWorker(self._detect, name=name)

    def submit(self, key: Hashable, frame: np.ndarray, caption: str, stamp: float) -> bool:
        """Ask for `caption` on `frame` (H x W x 3 uint8 RGB) for `key`; never blocks on
        the detector.

        The frame is copied, so the caller may reuse its buffer. `stamp` (e.g. seconds)
        comes back in the result. Returns True when this replaced a request for `key`
        that had not started yet (counted in `skipped`). Raises RuntimeError after
        `close()`.
        """
        return self._worker.submit(key, (np.array(frame, copy=True), caption), stamp)

    def poll(self, key: Hashable) -> Optional[GroundingResult]:
        """The newest finished result for `key`, or None; a result is handed over once.

        A result that was not polled before the next one for the same key finished is
        dropped for the newer one.
        """
        done = self._worker.poll(key)
        if done is None:
            return None
        error = None if done.ok else f"{type(done.error).__name__}: {done.error}"
        return GroundingResult(key=done.key, stamp=done.stamp, caption=done.item[1],
                               detections=list(done.value or []), seconds=done.seconds, error=error)

    def pending(self, key: Hashable) -> bool:
        """True while a request for `key` waits in the mailbox or runs."""
        return self._worker.pending(key)

    def cancel(self, key: Hashable) -> None:
        """Forget `key`: its waiting request, its unread result, and the result of a
        detection now running for it (which finishes but is dropped)."""
        self._worker.forget(key)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop the thread and join it (up to `timeout` seconds; None: until it ends).

        Waiting requests are dropped; a detection already running is finished first.
        Returns True when the thread has ended. Calling it again is harmless.
        """
        return self._worker.close(timeout)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._worker.alive

    @property
    def submitted(self) -> int:
        """Requests accepted by submit."""
        return self._worker.submitted()

    @property
    def skipped(self) -> int:
        """Requests replaced in the mailbox before they ran."""
        return self._worker.skipped()

    @property
    def completed(self) -> int:
        """Requests the detector answered."""
        return self._worker.finished() - self._worker.errors()

    @property
    def failed(self) -> int:
        """Requests on which the detector raised."""
        return self._worker.errors()

    def __enter__(self) -> "GroundingWorker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _detect(self, key: Hashable, item: tuple[np.ndarray, str], stamp: float) -> list[Detection]:
        frame, caption = item
        return list(self._detector.detect(frame, caption))
