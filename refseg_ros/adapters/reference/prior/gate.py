"""M-of-K acceptance of a reference target's best candidate, and M-of-K absence of a
tracked one (this project's own design).

Every frame the prior looks at gives one observation: the best valid candidate's raw
score, or None when there was none. The observation is a hit when its score is at least
`threshold`. The gate accepts on a frame when that frame is a hit and at least M of the
last K observations (this one included) are hits; the window is then emptied, so the
next acceptance needs M fresh hits. A single lucky frame does not pin a wrong object
(M > 1), and a target seen on most frames is taken even if a few frames miss (M < K).

The same M-of-K rule, on misses instead of hits, says when a tracked target is gone
(`AbsenceGate`): M of the last K looks at the frame found nothing like it.

The threshold applies to the raw score (cosine-based, see `candidates`), never to a
value normalised per frame, so that a frame without the target cannot produce a hit
just by having a least-dissimilar region.
"""

from __future__ import annotations

import collections
import math
from typing import Optional


class MOfK:
    """M-of-K hysteresis on yes/no observations: `observe` is True on a frame that is a
    yes while at least M of the last K observations (this one included) are yes; the
    window is then emptied. m, k: 1 <= m <= k, else ValueError. Not thread-safe."""

    def __init__(self, m: int = 2, k: int = 3):
        if not 1 <= m <= k:
            raise ValueError(f"need 1 <= m <= k, got m={m}, k={k}")
        self.m = int(m)
        self.k = int(k)
        self._window: collections.deque[bool] = collections.deque(maxlen=self.k)

    def observe(self, yes: bool) -> bool:
        """Record one observation; True when the rule fires on it (the window then empties)."""
        self._window.append(bool(yes))
        if yes and sum(self._window) >= self.m:
            self._window.clear()
            return True
        return False

    def reset(self) -> None:
        """Forget every observation."""
        self._window.clear()

    @property
    def hits(self) -> int:
        """Yes observations in the window now."""
        return sum(self._window)

    @property
    def window(self) -> tuple[bool, ...]:
        """The observations in the window now, oldest first."""
        return tuple(self._window)


class AcquisitionGate(MOfK):
    """M-of-K hysteresis on raw scores.

    threshold: the raw score a hit needs (finite); m, k: 1 <= m <= k, hits needed among
    the last k observations. Raises ValueError otherwise. Not thread-safe: one owner
    calls `update`.
    """

    def __init__(self, threshold: float, m: int = 2, k: int = 3):
        if not math.isfinite(threshold):
            raise ValueError(f"the acceptance threshold must be finite, got {threshold}")
        super().__init__(m, k)
        self.threshold = float(threshold)

    def hit(self, score: Optional[float]) -> bool:
        """Whether one observation counts: a score, not nan, >= threshold."""
        return score is not None and not math.isnan(score) and score >= self.threshold

    def update(self, score: Optional[float]) -> bool:
        """Record one observation (a raw score, or None: nothing found); True when this
        frame's candidate is accepted, after which the window starts empty."""
        return self.observe(self.hit(score))


class AbsenceGate(MOfK):
    """M-of-K absence of a tracked target: each look at a frame is a miss when nothing in
    it scores at least `threshold` (the acquisition's own), and the target is declared
    gone when M of the last K looks missed. Raises ValueError like `AcquisitionGate`."""

    def __init__(self, threshold: float, m: int = 2, k: int = 3):
        AcquisitionGate(threshold, m, k)  # the same settings, checked the same way
        super().__init__(m, k)
        self.threshold = float(threshold)

    def update(self, best: Optional[float]) -> bool:
        """Record one look (the best raw score found on the frame, or None: nothing);
        True when the target is to be declared gone."""
        present = best is not None and not math.isnan(best) and best >= self.threshold
        return self.observe(not present)
