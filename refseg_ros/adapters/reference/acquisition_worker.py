"""The slow phase of acquisition on a thread of its own, so frames are never held up.

One background thread runs `propose(key, frame, stamp)` for one request at a time.
Requests are latest-only per key (a key is e.g. a (stream, target) pair): a newer request
for a key replaces the one still waiting, and the replaced one is counted as skipped. The thread
serves the key whose waiting request is the oldest, so every key gets its turn; with
`min_interval_s` a key's requests start at least that many seconds apart (its own rate),
waiting (and being replaced by newer frames) until then. `poll(key)` hands over the
newest finished result once. An exception in `propose` becomes an error result; the
thread goes on. This worker is this project's own design.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional

import numpy as np

ProposeFunction = Callable[[Hashable, np.ndarray, float], Any]


@dataclass
class ProposalResult:
    """One finished request: key; stamp of its frame (as submitted); seconds the
    proposal took (wall clock); proposal (what `propose` returned, an
    `acquisition.Proposal` in use) or None on error; error: the exception, or None."""

    key: Hashable
    stamp: float
    seconds: float
    proposal: Any = None
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        """True when the proposal finished without raising."""
        return self.error is None


@dataclass
class _Request:
    frame: np.ndarray
    stamp: float
    submitted: float  # time.monotonic()
    generation: int


class AcquisitionWorker:
    """Background proposals, latest-only per key.

    propose: called as propose(key, frame, stamp) on the worker thread (e.g.
    `lambda key, frame, stamp: acquirers[key].propose(frame, stamp)`); min_interval_s:
    seconds (>= 0) between the starts of two proposals of one key. The frame is used as
    given, not copied: do not change it after submitting. Thread-safe. Raises ValueError for a negative interval.
    """

    def __init__(self, propose: ProposeFunction, min_interval_s: float = 0.0, name: str = "acquisition"):
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self._propose = propose
        self.min_interval_s = float(min_interval_s)
        self._cond = threading.Condition()
        self._pending: dict[Hashable, _Request] = {}
        self._results: dict[Hashable, ProposalResult] = {}
        self._last_start: dict[Hashable, float] = {}
        self._generation: collections.Counter[Hashable] = collections.Counter()
        self._busy: Optional[Hashable] = None
        self._skipped: collections.Counter[Hashable] = collections.Counter()
        self._finished: collections.Counter[Hashable] = collections.Counter()
        self._errors: collections.Counter[Hashable] = collections.Counter()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side
    def submit(self, key: Hashable, frame: np.ndarray, stamp: float = 0.0) -> bool:
        """Queue `frame` for `key`, replacing (skipping) a request still waiting; never
        waits for a proposal. Returns False once the worker is closed, else True."""
        with self._cond:
            if self._closed:
                return False
            if key in self._pending:
                self._skipped[key] += 1
            self._pending[key] = _Request(frame, float(stamp), time.monotonic(), self._generation[key])
            self._cond.notify_all()
            return True

    def wants(self, key: Hashable) -> bool:
        """Whether a frame submitted for `key` now could start at once: the worker is
        open, no request of `key` waits or runs, and `min_interval_s` has passed since
        its last start (a caller may skip copying frames otherwise)."""
        with self._cond:
            if self._closed or key in self._pending or self._busy == key:
                return False
            last = self._last_start.get(key)
            return last is None or time.monotonic() - last >= self.min_interval_s

    def poll(self, key: Hashable) -> Optional[ProposalResult]:
        """The newest finished result of `key`, handed over once; None when there is none."""
        with self._cond:
            return self._results.pop(key, None)

    def forget(self, key: Hashable) -> None:
        """Drop `key`'s waiting request, its unread result and its rate; a proposal of it
        still running is discarded when it finishes (e.g. the target was removed)."""
        with self._cond:
            self._pending.pop(key, None)
            self._results.pop(key, None)
            self._last_start.pop(key, None)
            self._generation[key] += 1

    def skipped(self, key: Hashable) -> int:
        """Requests of `key` replaced by a newer one before they started."""
        with self._cond:
            return self._skipped[key]

    def finished(self, key: Hashable) -> int:
        """Proposals of `key` finished (errors included)."""
        with self._cond:
            return self._finished[key]

    def errors(self, key: Hashable) -> int:
        """Proposals of `key` that raised."""
        with self._cond:
            return self._errors[key]

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop taking requests, drop the waiting ones, let a running proposal finish and
        join the thread (at most `timeout` seconds). Returns True when it has ended."""
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    # ------------------------------------------------------------------ worker side
    def _next(self) -> Optional[tuple[Hashable, _Request]]:
        """The oldest request whose key may start now, waiting until one may; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                ready, wake = [], None
                for key, request in self._pending.items():
                    last = self._last_start.get(key)
                    due = now if last is None else last + self.min_interval_s
                    if due <= now:
                        ready.append((request.submitted, key))
                    else:
                        wake = due if wake is None else min(wake, due)
                if ready:
                    _, key = min(ready, key=lambda item: item[0])
                    request = self._pending.pop(key)
                    self._last_start[key] = now
                    self._busy = key
                    return key, request
                self._cond.wait(None if wake is None else max(wake - now, 0.0))

    def _run(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            key, request = job
            start = time.perf_counter()
            try:
                proposal = self._propose(key, request.frame, request.stamp)
                result = ProposalResult(key, request.stamp, 0.0, proposal=proposal)
            except Exception as exc:  # any failure is the caller's to read, never the thread's end
                result = ProposalResult(key, request.stamp, 0.0, error=exc)
            result.seconds = time.perf_counter() - start
            with self._cond:
                self._busy = None
                if self._generation[key] == request.generation:
                    self._finished[key] += 1
                    if result.error is not None:
                        self._errors[key] += 1
                    self._results[key] = result
                self._cond.notify_all()
