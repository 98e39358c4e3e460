"""Frames waiting for the model: one slot per camera (live) or one ordered queue (replay).

Live: a camera's newest frame replaces the one still waiting, so the model always works
on the freshest frame and nothing piles up, however fast the camera publishes; each
replaced frame is counted as dropped. The worker serves the camera whose waiting frame
is the oldest, so every camera gets its turn.

Replay: every frame is kept, in arrival order across cameras; when the queue is full,
`put` waits (the subscriber then stops taking messages, and a reliable publisher slows
down) instead of dropping.

`get` hands the worker one frame; `get_batch` one frame of every camera that has one
waiting (one tick of several cameras, for the engine's `step_many`).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Envelope:
    """A message as received, with where and when it came in."""

    camera: str
    message: Any  # as the subscription gave it (the node's: CDR bytes)
    received: float  # time.monotonic()
    clock: float = 0.0  # the node's ROS clock at arrival, seconds (sim time under use_sim_time)


class Closed(Exception):
    """The mailbox was closed while waiting."""


class FrameMailbox:
    """Thread-safe hand-over of frames from subscription callbacks to one worker."""

    def __init__(self, replay: bool = False, capacity: int = 1000):
        self.replay = replay
        self.capacity = max(1, int(capacity))
        self._cond = threading.Condition()
        self._slots: dict[str, Envelope] = {}
        self._queue: collections.deque[Envelope] = collections.deque()
        self._dropped: collections.Counter[str] = collections.Counter()
        self._closed = False

    def put(self, camera: str, message: Any, clock: float = 0.0) -> bool:
        """Hand a frame over (`clock`: the ROS time it arrived, seconds); True if it
        replaced (dropped) a waiting one."""
        envelope = Envelope(camera, message, time.monotonic(), clock)
        with self._cond:
            if self._closed:
                return False
            if self.replay:
                while len(self._queue) >= self.capacity and not self._closed:
                    self._cond.wait(0.1)
                if self._closed:
                    return False
                self._queue.append(envelope)
                self._cond.notify_all()
                return False
            replaced = camera in self._slots
            if replaced:
                self._dropped[camera] += 1
            self._slots[camera] = envelope
            self._cond.notify_all()
            return replaced

    def get(self, timeout: Optional[float] = None) -> Optional[Envelope]:
        """The next frame to process, or None on timeout; raises Closed once closed."""
        return self._wait_for(self._take, timeout)

    def get_batch(self, timeout: Optional[float] = None) -> list[Envelope]:
        """Every camera's next frame at once, at most one per camera: [] on timeout;
        raises Closed once closed. Waits (up to `timeout` seconds, None: for ever) only
        while nothing waits at all.

        Live: the newest frame of each camera that has one, oldest arrival first (the
        slots are emptied). Replay: for each camera with frames queued, its oldest one,
        in arrival order; the frames left keep their order, so a camera's frames are
        never reordered (a camera's second frame waits for the next batch, and a frame of
        another camera behind it may be taken now).
        """
        return self._wait_for(self._take_all, timeout) or []

    def _wait_for(self, take: Callable[[], Any], timeout: Optional[float]) -> Any:
        """What `take` gives once it gives something (truthy), or None after `timeout`
        seconds (None: no limit); raises Closed once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise Closed()
                taken = take()
                if taken:
                    self._cond.notify_all()
                    return taken
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _take_all(self) -> list[Envelope]:
        if not self.replay:
            batch = sorted(self._slots.values(), key=lambda e: e.received)
            self._slots.clear()
            return batch
        batch: list[Envelope] = []
        kept: collections.deque[Envelope] = collections.deque()
        cameras: set[str] = set()
        for envelope in self._queue:
            if envelope.camera in cameras:
                kept.append(envelope)
            else:
                cameras.add(envelope.camera)
                batch.append(envelope)
        self._queue = kept
        return batch

    def _take(self) -> Optional[Envelope]:
        if self.replay:
            return self._queue.popleft() if self._queue else None
        if not self._slots:
            return None
        camera = min(self._slots, key=lambda c: self._slots[c].received)
        return self._slots.pop(camera)

    def dropped(self, camera: str) -> int:
        with self._cond:
            return self._dropped[camera]

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) if self.replay else len(self._slots)

    def close(self) -> None:
        """Wake everyone up; waiting frames are discarded."""
        with self._cond:
            self._closed = True
            self._slots.clear()
            self._queue.clear()
            self._cond.notify_all()
