"""A caption found by a grounding model: the engine's `Proposer` for text targets on the
grounding path.

On each frame the proposer (1) hands the frame to the shared `GroundingWorker` when its
`RegroundPolicy` says a call is due (never waiting for the detector), and (2) collects a
finished answer: while the target is acquiring or lost, the best box above the
threshold (`best_box`) becomes a box prompt seeded on the current frame; while it is
tracked, a periodic re-grounding seeds only a box that continues the track
(`continues_track`, IoU match), so the target keeps its id and never jumps to another
object. Nothing above the threshold: no seed, and the engine publishes no mask.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Optional

import numpy as np
import torch

from refseg_ros.engine.features import FrameFeatures
from refseg_ros.engine.seams import Seed
from refseg_ros.engine.types import BoxPrompt, TargetState

from .policy import RegroundPolicy
from .selection import best_box, continues_track
from .worker import GroundingWorker

_keys = itertools.count(1)


class GroundingProposer:
    """`seams.Proposer` for one caption target on one stream.

    worker: the node's shared GroundingWorker; threshold: the detector score a box needs;
    min_iou: the overlap a re-grounded box needs with the tracked box to continue it;
    clock: seconds (monotonic by default), the policy's time base; wait: block until the
    detector has answered on the frame it was given (offline evaluation, where results
    must not depend on timing; a live node never waits).
    """

    gates_output = True

    def __init__(self, worker: GroundingWorker, caption: str, threshold: float = 0.35,
                 policy: RegroundPolicy = RegroundPolicy(), min_iou: float = 0.3,
                 clock: Callable[[], float] = time.monotonic, wait: bool = False):
        self.worker, self.caption, self.threshold, self.wait = worker, caption, threshold, wait
        self.policy, self.min_iou, self.clock = policy, min_iou, clock
        self.key = ("grounding", next(_keys))
        self.last_call: Optional[float] = None

    def propose(self, model: torch.nn.Module, features: FrameFeatures, frame: np.ndarray, index: int,
                state: TargetState, box: Optional[tuple[int, int, int, int]]) -> Optional[Seed]:
        now = self.clock()
        if not self.worker.pending(self.key) and self.policy.due(state, now, self.last_call):
            self.worker.submit(self.key, frame, self.caption, float(index))
            self.last_call = now
            if self.wait:
                while self.worker.pending(self.key):
                    time.sleep(0.001)
        result = self.worker.poll(self.key)
        if result is None or not result.ok or not result.detections:
            return None
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        if state in (TargetState.ACQUIRING, TargetState.LOST) or box is None:
            chosen = best_box(result.detections, self.threshold, frame_size=hw)
            verb = "grounded"
        else:
            chosen = continues_track(result.detections, box, self.threshold, self.min_iou, frame_size=hw)
            verb = "re-grounded"
        if chosen is None:
            return None
        return Seed(BoxPrompt(tuple(float(v) for v in chosen.box)),
                    f"{verb} {self.caption!r} (score {chosen.score:.2f}, {result.seconds:.2f} s)")

    def close(self) -> None:
        self.worker.cancel(self.key)
