"""Grounding beside tracking: one background thread, a latest-only mailbox per key.

The caller (the engine's step, once per frame) never waits for the detector:

- `submit(key, frame, caption, stamp)` copies the frame and leaves the request in the
  key's mailbox; a request still waiting there is replaced and counted as skipped
  (only the newest frame is worth grounding);
- the thread takes waiting requests one at a time (keys in the order their mailbox
  was filled) and runs `detector.detect` on them;
- `poll(key)` hands over the key's newest finished result, once.

The detector runs on the worker's thread. It shares torch's intra-op thread pool with
the caller (nothing here calls `torch.set_num_threads`), so on a CPU a running
detection slows tracking down while it lasts; on a GPU both queue work on the same
device. An exception from the detector becomes the result's `error`; the thread
carries on with the next request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Hashable, Optional, Protocol

import numpy as np

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


@dataclass(frozen=True)
class _Request:
    key: Hashable
    frame: np.ndarray
    caption: str
    stamp: float


class GroundingWorker:
    """Runs `detector.detect` on a background thread, latest request per key only.

    Thread-safe: submit, poll, pending, cancel and the counters may be called from any
    thread; none of them waits for a detection. The thread is a daemon, started here.
    """

    def __init__(self, detector: Detector, name: str = "refseg-grounding") -> None:
        """Start the thread (named `name`) that serves `detector`."""
        self._detector = detector
        self._cond = threading.Condition()
        self._mailbox: dict[Hashable, _Request] = {}  # insertion order = service order
        self._results: dict[Hashable, GroundingResult] = {}
        self._running: Optional[Hashable] = None
        self._running_cancelled = False
        self._closed = False
        self.submitted = 0  # requests accepted by submit
        self.skipped = 0  # requests replaced in the mailbox before they ran
        self.completed = 0  # requests the detector answered
        self.failed = 0  # requests on which the detector raised
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, frame: np.ndarray, caption: str, stamp: float) -> bool:
        """Ask for `caption` on `frame` (H x W x 3 uint8 RGB) for `key`; never blocks on
        the detector.

        The frame is copied, so the caller may reuse its buffer. `stamp` (e.g. seconds)
        comes back in the result. Returns True when this replaced a request for `key`
        that had not started yet (counted in `skipped`). Raises RuntimeError after
        `close()`.
        """
        copy = np.array(frame, copy=True)
        request = _Request(key, copy, caption, float(stamp))
        with self._cond:
            if self._closed:
                raise RuntimeError("GroundingWorker is closed")
            replaced = key in self._mailbox
            self._mailbox[key] = request  # a replaced key keeps its place in the queue
            self.submitted += 1
            if replaced:
                self.skipped += 1
            self._cond.notify()
        return replaced

    def poll(self, key: Hashable) -> Optional[GroundingResult]:
        """The newest finished result for `key`, or None; a result is handed over once.

        A result that was not polled before the next one for the same key finished is
        dropped for the newer one.
        """
        with self._cond:
            return self._results.pop(key, None)

    def pending(self, key: Hashable) -> bool:
        """True while a request for `key` waits in the mailbox or runs."""
        with self._cond:
            return key in self._mailbox or (self._running == key and not self._running_cancelled)

    def cancel(self, key: Hashable) -> None:
        """Forget `key`: its waiting request, its unread result, and the result of a
        detection now running for it (which finishes but is dropped)."""
        with self._cond:
            self._mailbox.pop(key, None)
            self._results.pop(key, None)
            if self._running == key:
                self._running_cancelled = True

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop the thread and join it (up to `timeout` seconds; None: until it ends).

        Waiting requests are dropped; a detection already running is finished first.
        Returns True when the thread has ended. Calling it again is harmless.
        """
        with self._cond:
            self._closed = True
            self._mailbox.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> "GroundingWorker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._mailbox and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                key = next(iter(self._mailbox))
                request = self._mailbox.pop(key)
                self._running, self._running_cancelled = key, False
            result = self._run(request)
            with self._cond:
                if not self._running_cancelled and not self._closed:
                    self._results[key] = result
                if result.ok:
                    self.completed += 1
                else:
                    self.failed += 1
                self._running, self._running_cancelled = None, False

    def _run(self, request: _Request) -> GroundingResult:
        start = time.perf_counter()
        try:
            detections = list(self._detector.detect(request.frame, request.caption))
            error = None
        except Exception as exc:  # the thread must outlive any detector failure
            detections, error = [], f"{type(exc).__name__}: {exc}"
        return GroundingResult(key=request.key, stamp=request.stamp, caption=request.caption,
                               detections=detections, seconds=time.perf_counter() - start, error=error)
