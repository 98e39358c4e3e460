"""When to ask the detector again for a target given by a caption."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

SEARCHING = frozenset({"acquiring", "lost"})  # no box: ground until one is found
STATES = frozenset({"acquiring", "tracked", "occluded", "lost"})


@dataclass(frozen=True)
class RegroundPolicy:
    """Whether a grounding call is due for one target; pure logic on its state and times.

    - `interval_s` (seconds, >= 0): while the target is `tracked`, ground again once
      this long has passed since the last grounding started (0: never while tracked);
    - `retry_s` (seconds, >= 0): while `acquiring` or `lost`, at most one call per this
      long (0: on every frame; with `GroundingWorker` a call that finds the detector
      busy only replaces the waiting one, so that is cheap).

    `occluded` is never due: the tracker's memory still expects the object back, and
    the state turns `lost` when it does not come. Raises ValueError for a negative or
    non-finite time.
    """

    interval_s: float = 0.0
    retry_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("interval_s", "retry_s"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value}")

    def due(self, state: str, now_s: float, last_s: Optional[float]) -> bool:
        """True when the target should be grounded at `now_s`.

        - `state`: "acquiring", "tracked", "occluded" or "lost" (an engine TargetState
          works as well; it is a str);
        - `now_s`: the current time, seconds (the frame's stamp or a monotonic clock);
        - `last_s`: when the last grounding for this target was started, same clock;
          None if never.

        acquiring / lost: due when never grounded or `retry_s` has passed; tracked: due
        when `interval_s` > 0 and it has passed (or never grounded); occluded: never.
        A clock that went back (now_s < last_s, e.g. a replayed recording restarting)
        counts as time passed. Raises ValueError for an unknown state.
        """
        name = getattr(state, "value", state)
        if name not in STATES:
            raise ValueError(f"unknown target state {state!r}; expected one of {sorted(STATES)}")
        if name == "occluded":
            return False
        if name in SEARCHING:
            return _elapsed(now_s, last_s, self.retry_s)
        return self.interval_s > 0.0 and _elapsed(now_s, last_s, self.interval_s)


def _elapsed(now_s: float, last_s: Optional[float], period_s: float) -> bool:
    if last_s is None:
        return True
    passed = float(now_s) - float(last_s)
    return passed < 0.0 or passed >= period_s
