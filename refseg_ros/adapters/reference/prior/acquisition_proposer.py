"""A reference target found again by its prior: the engine's `Proposer` for reference
targets (acquisition and re-acquisition).

While the target is acquiring or lost, each frame is offered to the shared
`LatestWorker` (DINOv2 prior + peaks, at its own rate, in the background); a
finished proposal is decoded and scored on the current frame's SAM2 features
(`Acquirer.decide`: one batched decode, raw score, M-of-K gate). An accepted candidate
becomes a click prompt on the current frame, which the engine pins as a conditioning
memory ("re-acquired"). Until then the engine publishes no mask for the target.

While the target is tracked, the same prior keeps looking at frames at its rate
(`watch`, on by default): a look misses when, around the tracked mask's box (the
box widened by half its size on each side), no cell that looks more like the examples'
foreground than their background reaches the acceptance threshold
(`Acquirer.presence`). Frames on which nothing is shown (the target occluded, or an
empty mask) are not looked at: no wrong region is published there, and the engine's
occlusion patience decides when such a target is lost. M misses among the last K
looks (the acquisition's own M and K, `gate.AbsenceGate`) answer `Absent`: the engine
declares the target lost, forgets the frames it tracked lately and publishes no mask,
however sure SAM2's memory is, until the prior finds it again. This is what
keeps a robot from following a region SAM2 draws from memory after the object has left
the view, or after the track has slid onto something else while the object is still
in view elsewhere.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from typing import Optional

import numpy as np
import torch

from refseg_ros.adapters.latest_worker import LatestWorker
from refseg_ros.engine.features import FrameFeatures
from refseg_ros.engine.seams import Absent, Seed
from refseg_ros.engine.types import PointsPrompt, TargetState

from .acquisition import Acquirer, AcquirerConfig, Proposal
from .dino_encoder import DinoEncoder
from .gate import AbsenceGate
from .reference_prior import ReferencePrototypes, prototypes_from_examples

_keys = itertools.count(1)
SEARCHING = (TargetState.ACQUIRING, TargetState.LOST)


class AcquisitionService:
    """The node's acquisition: one DINOv2 encoder, one background worker, the acquirers
    of every reference target it serves.

    min_interval_s: seconds between two proposals for one target (the prior's own rate);
    synchronous: each proposal is waited for on the frame it was asked on (offline
    evaluation: results independent of timing; never in the node); watch: the prior also
    looks at a tracked target's frames and declares it lost when it is gone (module
    docstring).
    """

    def __init__(self, encoder: DinoEncoder, config: AcquirerConfig = AcquirerConfig(),
                 min_interval_s: float = 0.0, synchronous: bool = False, watch: bool = True):
        self.encoder, self.config, self.synchronous, self.watch = encoder, config, synchronous, watch
        self._acquirers: dict = {}
        self.worker = LatestWorker(self._propose, min_interval_s, name="refseg-acquisition")

    def prototypes(self, images: list[np.ndarray], masks: list[np.ndarray]) -> ReferencePrototypes:
        """A target's prototypes from its examples ((H, W, 3) uint8, (H, W) bool), at teach time."""
        return prototypes_from_examples(self.encoder, images, masks)

    def proposer(self, prototypes: ReferencePrototypes) -> "ReferenceAcquisition":
        """A proposer for one target on one stream."""
        return ReferenceAcquisition(self, Acquirer(self.encoder, prototypes, self.config))

    def update(self, *, threshold: float, m: int, window: int, min_interval_s: float) -> None:
        """Live settings, used from every served target's next decision on (and by the
        targets added later): the raw score a frame needs, M of the last `window` looks
        (for acquisition and for the absence watch; their windows start empty when these
        change) and seconds between two proposals for one target. Raises ValueError for a
        non-finite threshold, m outside 1..window or a negative interval."""
        if not min_interval_s >= 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        config = replace(self.config, threshold=threshold, m=m, window=window)
        self.config = config
        self.worker.min_interval_s = float(min_interval_s)
        for acquirer in list(self._acquirers.values()):
            acquirer.configure(config)

    def close(self) -> None:
        self.worker.close()

    def _propose(self, key, frame: np.ndarray, stamp: float):
        return self._acquirers[key].propose(frame, stamp)


class ReferenceAcquisition:
    """`seams.Proposer` for one reference target on one stream (made by
    `AcquisitionService.proposer`)."""

    gates_output = True

    def __init__(self, service: AcquisitionService, acquirer: Acquirer):
        self.service, self.worker, self.acquirer = service, service.worker, acquirer
        self._absence_of: Optional[AcquirerConfig] = None  # the config `absence` was built from
        self._follow_config()
        self.key = ("acquisition", next(_keys))
        self.last_click: Optional[tuple[float, float]] = None  # (x, y) pixels of the last seed
        service._acquirers[self.key] = acquirer

    def propose(self, model: torch.nn.Module, features: FrameFeatures, frame: np.ndarray, index: int,
                state: TargetState, box: Optional[tuple[int, int, int, int]]) -> Optional[Seed | Absent]:
        self._follow_config()
        searching = state in SEARCHING
        if searching:
            self.absence.reset()
        else:
            self.acquirer.reset()
            if not self.service.watch or state != TargetState.TRACKED or box is None:
                return None  # occluded or an empty mask: nothing is shown, occlusion_patience rules
        proposal = self._look(frame, index)
        if proposal is None:
            return None
        if not searching:
            return self._watch(proposal, box, frame.shape[:2])
        acquisition = self.acquirer.decide(model, features, proposal, frame.shape[:2])
        if acquisition is None:
            return None
        x, y = (float(v) for v in acquisition.point_xy)
        self.last_click = (x, y)
        return Seed(PointsPrompt(np.array([[x, y]], dtype=np.float32), np.array([1], dtype=np.int64)),
                    f"found by its prior at ({x:.0f}, {y:.0f}) (score {acquisition.verdict.score:.2f})")

    def _follow_config(self) -> None:
        """A new absence gate (window empty) when the acquirer's config was replaced
        (`AcquisitionService.update`)."""
        config = self.acquirer.config
        if config is not self._absence_of:
            self._absence_of, self.absence = config, AbsenceGate(config.threshold, config.m, config.window)

    def _look(self, frame: np.ndarray, index: int) -> Optional[Proposal]:
        """Hand the frame to the worker when it wants one; the newest finished proposal
        (waited for when synchronous), or None."""
        submitted = self.worker.wants(self.key)
        if submitted:
            self.worker.submit(self.key, frame.copy(), float(index))
        result = self.worker.poll(self.key)
        while submitted and result is None and self.service.synchronous:
            time.sleep(0.001)
            result = self.worker.poll(self.key)
        if result is None or not result.ok:
            return None
        return result.value

    def _watch(self, proposal: Proposal, box: Optional[tuple[int, int, int, int]],
               frame_hw: tuple[int, int]) -> Optional[Absent]:
        """One look at a tracked target's frame: `Absent` once M of the last K looks found
        no eligible cell at the acceptance threshold around its box."""
        if not self.absence.update(self.acquirer.presence(proposal, box, frame_hw)):
            return None
        self.acquirer.reset()
        return Absent(f"its prior finds nothing like it where it is tracked, in {self.absence.m} of the "
                      f"last {self.absence.k} looks")

    def close(self) -> None:
        self.worker.forget(self.key)
        self.service._acquirers.pop(self.key, None)
