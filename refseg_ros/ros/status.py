"""What the segmenter says: each line goes to its log and to its status topic.

Three ways of saying something: `say` (every time: events, acknowledgements), `once` (a
warning about a camera, once per activation, and once more after it stopped applying and
came back) and `rejected` (a rejected frame, the same words about the same camera at most
once per `status_repeat_period`). The camera channels and the node share one instance, so
a camera reports its own problems without going through the node.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from std_msgs.msg import String


class StatusReports:
    """The node's log and status topic, with the memory of what was said once.

    `logger`: the node's rclpy logger. `publisher` (std_msgs/String) is set while the node
    is active; without one, lines go to the log only. Thread-safe.
    """

    # Rejection texts carry sizes and texts: the table of when each was last said stays small.
    MAX_REMEMBERED = 1000

    def __init__(self, logger: Any):
        self.logger = logger
        self.publisher: Any = None
        self._said_once: set[tuple[str, str]] = set()  # (camera, kind)
        self._last_rejection: dict[tuple[str, str], float] = {}  # (camera, reason) -> time.monotonic()
        self._lock = threading.Lock()

    def say(self, text: str, error: bool = False) -> None:
        """Log `text` (a warning when `error`, else info) and publish it on the status topic."""
        # rclpy ties a severity to each logging call site: two separate calls, not one.
        if error:
            self.logger.warning(text)
        else:
            self.logger.info(text)
        pub = self.publisher  # read once: deactivation may drop it meanwhile
        if pub is not None:
            pub.publish(String(data=text))

    def once(self, camera: str, kind: str, text: Optional[str]) -> None:
        """Say `camera {camera}: {text}` as a warning unless this kind was said already;
        `text` None: the problem is gone (said again if it comes back)."""
        key = (camera, kind)
        with self._lock:
            if text is None:
                self._said_once.discard(key)
                return
            if key in self._said_once:
                return
            self._said_once.add(key)
        self.say(f"camera {camera}: {text}", error=True)

    def update(self, camera: str, notes: dict[str, Optional[str]]) -> None:
        """`once(camera, kind, text)` for each kind and text of `notes`, in order."""
        for kind, text in notes.items():
            self.once(camera, kind, text)

    def rejected(self, camera: str, reason: str, repeat_period: float) -> None:
        """Say why a frame of `camera` was rejected, unless the same reason was said less
        than `repeat_period` seconds ago."""
        key, now = (camera, reason), time.monotonic()
        with self._lock:
            if now - self._last_rejection.get(key, -1e9) < repeat_period:
                return
            if len(self._last_rejection) > self.MAX_REMEMBERED:
                self._last_rejection.clear()
            self._last_rejection[key] = now
        self.say(f"rejected frame on camera {camera}: {reason}", error=True)

    def forget_once(self) -> None:
        """Forget what was said once (deactivation: the next activation says it again)."""
        with self._lock:
            self._said_once.clear()
