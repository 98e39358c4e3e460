"""Per-camera counters and timings behind the node's diagnostics.

Rates are measured over the interval between two reports, so a diagnostics consumer sees
what happened lately, not a lifetime average; totals (dropped, rejected) are lifetime
counts, as operators compare them across reports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional


@dataclass
class CameraReport:
    """One camera's numbers for one diagnostics interval."""

    camera: str
    interval: float
    input_rate: float  # frames received per second
    processed_rate: float  # frames segmented per second
    received: int  # lifetime totals
    processed: int
    dropped: int
    rejected: int
    latency_last: Optional[float]  # seconds, now - header.stamp at publish
    latency_mean: Optional[float]
    latency_max: Optional[float]
    step_mean: Optional[float]  # engine step seconds
    overhead_mean: Optional[float]  # conversion + publishing seconds
    overlays: int  # overlay images drawn (only while someone subscribes)
    last_error: str
    seconds_since_input: Optional[float]


class CameraStats:
    """Thread-safe counters for one camera, written by callbacks and the worker."""

    def __init__(self, camera: str):
        self.camera = camera
        self._lock = threading.Lock()
        self.received = self.processed = self.rejected = self.dropped = self.overlays = 0
        self.last_error = ""
        self._last_input: Optional[float] = None
        self._window_start = time.monotonic()
        self._win_received = self._win_processed = 0
        self._latencies: list[float] = []
        self._steps: list[float] = []
        self._overheads: list[float] = []
        self._latency_last: Optional[float] = None

    def on_input(self) -> None:
        with self._lock:
            self.received += 1
            self._win_received += 1
            self._last_input = time.monotonic()

    def on_dropped(self) -> None:
        """A waiting frame was replaced by a newer one before the model saw it."""
        with self._lock:
            self.dropped += 1

    def on_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_error = reason

    def on_processed(self, latency: float, step: float, overhead: float, overlay: bool = False) -> None:
        with self._lock:
            self.overlays += int(overlay)
            self.processed += 1
            self._win_processed += 1
            self._latency_last = latency
            self._latencies.append(latency)
            self._steps.append(step)
            self._overheads.append(overhead)

    def report(self) -> CameraReport:
        """The numbers since the previous report; starts a new interval."""
        now = time.monotonic()
        with self._lock:
            interval = max(now - self._window_start, 1e-9)
            rep = CameraReport(
                camera=self.camera, interval=interval,
                input_rate=self._win_received / interval,
                processed_rate=self._win_processed / interval,
                received=self.received, processed=self.processed, dropped=self.dropped,
                rejected=self.rejected, overlays=self.overlays, latency_last=self._latency_last,
                latency_mean=_mean(self._latencies),
                latency_max=max(self._latencies) if self._latencies else None,
                step_mean=_mean(self._steps), overhead_mean=_mean(self._overheads),
                last_error=self.last_error,
                seconds_since_input=None if self._last_input is None else now - self._last_input,
            )
            self._window_start = now
            self._win_received = self._win_processed = 0
            self._latencies, self._steps, self._overheads = [], [], []
            return rep


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None
