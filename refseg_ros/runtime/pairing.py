"""Pairing an aligned depth image with a colour frame by stamp (no ROS needed).

message_filters' ApproximateTimeSynchronizer is not installable from PyPI; this is the
small part of it the node needs. Each camera keeps its latest few depth messages in a
bounded buffer keyed by header stamp; when the worker takes a colour frame it asks for
the depth message whose stamp is closest to the frame's, and gets it only when the two
lie within a tolerance; depth older than the processed frame (less the tolerance) is
then forgotten, so that in replay mode, where frames wait in a deep queue, the buffer
holds about the depth of the waiting frames and no more. A depth stream that runs ahead or behind by more than that, or
stops, leaves the frame without depth (it still publishes, with no position).
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Optional


class StampBuffer:
    """The last `capacity` items of one stream, by stamp (integer nanoseconds); thread-safe.

    `put` is called from subscription callbacks, `closest` from the worker.
    """

    def __init__(self, capacity: int = 10):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = int(capacity)
        self._stamps: list[int] = []  # sorted
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def put(self, stamp_ns: int, item: Any) -> None:
        """Keep `item` under `stamp_ns`; the oldest stamp goes when the buffer is full. An
        item with a stamp already held replaces it."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._items[i] = item
                return
            self._stamps.insert(i, stamp_ns)
            self._items.insert(i, item)
            if len(self._stamps) > self.capacity:
                del self._stamps[0]
                del self._items[0]

    def closest(self, stamp_ns: int, tolerance_ns: int) -> Optional[tuple[int, Any]]:
        """(stamp, item) of the held stamp nearest to `stamp_ns`, or None when none lies
        within `tolerance_ns` (inclusive). Ties go to the earlier stamp."""
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    gap = abs(self._stamps[j] - stamp_ns)
                    if best is None or gap < best[0]:
                        best = (gap, j)
            gap, j = best
            if gap > tolerance_ns:
                return None
            return self._stamps[j], self._items[j]

    def forget_before(self, stamp_ns: int) -> int:
        """Drop every item stamped before `stamp_ns` (no later frame can pair with it once
        frames are processed in stamp order); how many went."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            del self._stamps[:i]
            del self._items[:i]
            return i

    def newest_stamp(self) -> Optional[int]:
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    def clear(self) -> None:
        with self._lock:
            self._stamps.clear()
            self._items.clear()


def cdr_header_stamp_ns(data: bytes) -> int:
    """header.stamp, in nanoseconds, of a serialized message that begins with a
    std_msgs/Header (sensor_msgs/Image, CameraInfo, ...), read from its CDR bytes without
    deserializing the rest: 4 bytes of encapsulation (byte 1: 0/2 big endian, 1/3 little
    endian), then int32 sec and uint32 nanosec.

    Raises:
        ValueError: fewer than 12 bytes.
    """
    if len(data) < 12:
        raise ValueError(f"{len(data)} bytes are too few for a CDR message with a header")
    order = "little" if data[1] & 1 else "big"
    sec = int.from_bytes(data[4:8], order, signed=True)
    nanosec = int.from_bytes(data[8:12], order, signed=False)
    return sec * 1_000_000_000 + nanosec
