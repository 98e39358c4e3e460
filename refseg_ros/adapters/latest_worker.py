"""Slow work beside tracking: one background thread, the latest request per key only.

The caller (the engine's step, once per frame) never waits for the work:

- `submit(key, item, stamp)` leaves the request in the key's mailbox; a request still
  waiting there is replaced and counted as skipped (only the newest frame is worth the
  work); a replaced key keeps its place in the queue;
- the thread takes waiting requests one at a time, keys in the order their mailbox was
  filled, and runs `run(key, item, stamp)` on them; with `min_interval_s` a key's runs
  start at least that many seconds apart (its own rate), its request waiting (and being
  replaced by newer ones) until then, while other keys go ahead;
- `poll(key)` hands over the key's newest finished result, once.

An exception from `run` becomes the result's `error`; the thread carries on with the
next request. The work shares torch's intra-op thread pool with the caller (nothing here
sets torch's threads), so on a CPU it slows tracking down while it runs. Used by
grounding (`grounding.worker`), reference acquisition (`reference.prior`) and the
diffusion transition frames (`reference.cavsam`). This worker is this project's own
design.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional

RunFunction = Callable[[Hashable, Any, float], Any]


@dataclass
class WorkResult:
    """One finished request.

    key: the key it was submitted under; item: what was submitted; stamp: the stamp it
    was submitted with (the caller's units, e.g. a frame index or seconds); seconds:
    wall-clock time `run` took; value: what `run` returned, None on error; error: the
    exception `run` raised, or None.
    """

    key: Hashable
    item: Any
    stamp: float
    seconds: float = 0.0
    value: Any = None
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        """True when `run` finished without raising."""
        return self.error is None


@dataclass
class _Request:
    item: Any
    stamp: float


class LatestWorker:
    """Runs `run(key, item, stamp)` on a background daemon thread (named `name`, started
    here), latest request per key only (module docstring).

    min_interval_s: seconds (>= 0) between the starts of two runs of one key. Items are
    used as given, not copied: do not change one after submitting it. Thread-safe: every
    method may be called from any thread, and none waits for a run but `close`.
    Raises ValueError for a negative interval.
    """

    def __init__(self, run: RunFunction, min_interval_s: float = 0.0, name: str = "refseg-worker") -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self._run_one = run
        self.min_interval_s = float(min_interval_s)
        self._name = name
        self._cond = threading.Condition()
        self._waiting: dict[Hashable, _Request] = {}  # insertion order = service order
        self._results: dict[Hashable, WorkResult] = {}
        self._last_start: dict[Hashable, float] = {}
        self._running: Optional[Hashable] = None
        self._running_dropped = False  # the running key was forgotten: its result is dropped
        self._counts: dict[str, collections.Counter[Hashable]] = {
            event: collections.Counter() for event in ("submitted", "skipped", "finished", "errors")}
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side
    def submit(self, key: Hashable, item: Any, stamp: float = 0.0) -> bool:
        """Queue `item` for `key`; never waits for a run. Returns True when this replaced
        a request of `key` that had not started yet (counted in `skipped`). Raises
        RuntimeError once the worker is closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError(f"worker {self._name!r} is closed")
            replaced = key in self._waiting
            self._waiting[key] = _Request(item, float(stamp))  # a replaced key keeps its place
            self._counts["submitted"][key] += 1
            if replaced:
                self._counts["skipped"][key] += 1
            self._cond.notify_all()
            return replaced

    def pending(self, key: Hashable) -> bool:
        """True while a request of `key` waits, or runs and was not forgotten."""
        with self._cond:
            return key in self._waiting or (self._running == key and not self._running_dropped)

    def wants(self, key: Hashable) -> bool:
        """Whether a request submitted for `key` now could start at once: the worker is
        open, no request of `key` waits or runs (forgotten or not), and `min_interval_s`
        has passed since its last start (a caller may skip copying frames otherwise)."""
        with self._cond:
            if self._closed or key in self._waiting or self._running == key:
                return False
            last = self._last_start.get(key)
            return last is None or time.monotonic() - last >= self.min_interval_s

    def poll(self, key: Hashable) -> Optional[WorkResult]:
        """The newest finished result of `key`, handed over once; None when there is none.
        A result not polled before the next one of the same key finished is dropped."""
        with self._cond:
            return self._results.pop(key, None)

    def forget(self, key: Hashable) -> None:
        """Drop `key`'s waiting request, its unread result and its rate; a run of it still
        going finishes, uncounted, and its result is dropped (e.g. the target was removed)."""
        with self._cond:
            self._waiting.pop(key, None)
            self._results.pop(key, None)
            self._last_start.pop(key, None)
            if self._running == key:
                self._running_dropped = True

    def submitted(self, key: Optional[Hashable] = None) -> int:
        """Requests accepted for `key` (None: for every key)."""
        return self._count("submitted", key)

    def skipped(self, key: Optional[Hashable] = None) -> int:
        """Requests of `key` (None: of every key) replaced by a newer one before they started."""
        return self._count("skipped", key)

    def finished(self, key: Optional[Hashable] = None) -> int:
        """Runs of `key` (None: of every key) finished, errors included, forgotten ones not."""
        return self._count("finished", key)

    def errors(self, key: Optional[Hashable] = None) -> int:
        """Runs of `key` (None: of every key) that raised, forgotten ones not counted."""
        return self._count("errors", key)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Stop taking requests, drop the waiting ones, let a running one finish and join
        the thread (at most `timeout` seconds; None: until it ends). Returns True when the
        thread has ended. Calling it again is harmless."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def __enter__(self) -> "LatestWorker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker side
    def _count(self, event: str, key: Optional[Hashable]) -> int:
        with self._cond:
            counts = self._counts[event]
            return sum(counts.values()) if key is None else counts[key]

    def _next(self) -> Optional[tuple[Hashable, _Request]]:
        """The first waiting request whose key may start now, waiting until one may;
        None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now, wake = time.monotonic(), None
                for key in self._waiting:
                    last = self._last_start.get(key)
                    due = now if last is None else last + self.min_interval_s
                    if due <= now:
                        self._last_start[key] = now
                        self._running, self._running_dropped = key, False
                        return key, self._waiting.pop(key)
                    wake = due if wake is None else min(wake, due)
                self._cond.wait(None if wake is None else max(wake - now, 0.0))

    def _serve(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            key, request = job
            result = WorkResult(key, request.item, request.stamp)
            start = time.perf_counter()
            try:
                result.value = self._run_one(key, request.item, request.stamp)
            except Exception as exc:  # any failure is the caller's to read, never the thread's end
                result.error = exc
            result.seconds = time.perf_counter() - start
            with self._cond:
                if not self._running_dropped:
                    self._counts["finished"][key] += 1
                    if result.error is not None:
                        self._counts["errors"][key] += 1
                    self._results[key] = result
                self._running, self._running_dropped = None, False
                self._cond.notify_all()
