"""Per-camera counters and timings behind the node's diagnostics.

Rates, latencies and step times cover the last ``window`` seconds, so a diagnostics
consumer sees what happened lately, not a lifetime average, and two reports that come
close together (a timer callback that ran late, then one on time) still say the same;
totals (dropped, rejected) are lifetime counts, as operators compare them across reports.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class CameraReport:
    """One camera's numbers for one diagnostics interval."""

    camera: str
    interval: float  # seconds the rates and means cover
    input_rate: float  # frames received per second
    processed_rate: float  # frames segmented per second
    received: int  # lifetime totals
    processed: int
    dropped: int
    rejected: int
    latency_last: Optional[float]  # seconds, now - header.stamp at publish; None: stamp implausible
    latency_mean: Optional[float]
    latency_max: Optional[float]
    step_mean: Optional[float]  # engine step seconds
    overhead_mean: Optional[float]  # conversion + publishing seconds
    overlays: int  # overlay images drawn (only while someone subscribes)
    last_error: str
    seconds_since_input: Optional[float]
    header_problem: str  # why the newest processed frame's header is implausible; "" if it is fine
    seconds_active: float  # since the stats began (the camera's subscription opened)


@dataclass
class _Processed:
    at: float  # time.monotonic()
    latency: Optional[float]
    step: float
    overhead: float


class CameraStats:
    """Thread-safe counters for one camera, written by callbacks and the worker."""

    def __init__(self, camera: str, window: float = 5.0):
        self.camera = camera
        self.window = window
        self._lock = threading.Lock()
        self.received = self.processed = self.rejected = self.dropped = self.overlays = 0
        self.last_error = ""
        self.header_problem = ""
        self._last_input: Optional[float] = None
        self._started = time.monotonic()
        self._inputs: collections.deque[float] = collections.deque()  # arrival times in the window
        self._done: collections.deque[_Processed] = collections.deque()
        self._latency_last: Optional[float] = None

    def on_input(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.received += 1
            self._inputs.append(now)
            self._last_input = now
            self._forget_before(now - self.window)

    def on_dropped(self) -> None:
        """A waiting frame was replaced by a newer one before the model saw it."""
        with self._lock:
            self.dropped += 1

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = reason

    def on_header(self, problem: Optional[str]) -> None:
        """The newest frame's header problem (None: plausible)."""
        with self._lock:
            self.header_problem = problem or ""

    def on_processed(self, latency: Optional[float], step: float, overhead: float, overlay: bool = False) -> None:
        """A frame was segmented and published; `latency` None when its stamp is implausible."""
        now = time.monotonic()
        with self._lock:
            self.overlays += int(overlay)
            self.processed += 1
            self._latency_last = latency
            self._done.append(_Processed(now, latency, step, overhead))
            self._forget_before(now - self.window)

    def report(self) -> CameraReport:
        """The numbers of the last ``window`` seconds (less, right after the start)."""
        now = time.monotonic()
        with self._lock:
            self._forget_before(now - self.window)
            interval = max(min(self.window, now - self._started), 1e-9)
            latencies = [p.latency for p in self._done if p.latency is not None]
            return CameraReport(
                camera=self.camera, interval=interval,
                input_rate=len(self._inputs) / interval,
                processed_rate=len(self._done) / interval,
                received=self.received, processed=self.processed, dropped=self.dropped,
                rejected=self.rejected, overlays=self.overlays, latency_last=self._latency_last,
                latency_mean=_mean(latencies), latency_max=max(latencies) if latencies else None,
                step_mean=_mean([p.step for p in self._done]),
                overhead_mean=_mean([p.overhead for p in self._done]),
                last_error=self.last_error,
                seconds_since_input=None if self._last_input is None else now - self._last_input,
                header_problem=self.header_problem, seconds_active=now - self._started,
            )

    def _forget_before(self, oldest: float) -> None:
        while self._inputs and self._inputs[0] < oldest:
            self._inputs.popleft()
        while self._done and self._done[0].at < oldest:
            self._done.popleft()


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None
