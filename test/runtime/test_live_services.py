"""Live thresholds and intervals reach the services that copied them at configure: the
grounding path (`GroundingPath.update`) and the acquisition (`update_acquisition`), for the
targets they already serve and those added later. Real parts: a tiny OWLv2 detector, a
tiny DINOv2, SAM2 sam2_hiera_t at 256 with random weights whose object head says
"present"; both services are synchronous, so each decision uses the frame it was asked on.
"""

from __future__ import annotations

import numpy as np
import pytest

from refseg_ros.adapters.reference.prior.acquisition import AcquirerConfig
from refseg_ros.adapters.reference.prior.acquisition_proposer import AcquisitionService
from refseg_ros.adapters.reference.prior.candidates import ScoringRules
from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine, TargetState
from refseg_ros.runtime.acquisition import AcquisitionSettings, update_acquisition
from refseg_ros.runtime.captions import GroundingPath, TextSettings
from support.tiny_models import OWL_SCORE, load_owl, present_sam, save_dinov2, save_owlv2

BELOW, ABOVE = OWL_SCORE - 0.1, min(1.0, OWL_SCORE + 0.05)  # grounding thresholds around the detector's score


@pytest.fixture(scope="module")
def sam():
    return present_sam()


def _engine(sam) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu"),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


def _noise(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_grounding_threshold_and_intervals_reach_existing_and_new_caption_targets(sam, tmp_path):
    detector = load_owl(save_owlv2(tmp_path / "owlv2"))
    path = GroundingPath(detector, BELOW, 0.0, 0.0, synchronous=True)
    try:
        engine = _engine(sam)
        path.add(engine, "cam", "a red cup", label="a red cup", target_id=1)
        path.update(TextSettings(grounding_threshold=ABOVE, regrounding_interval=4.0, grounding_retry=0.0))
        path.add(engine, "cam", "a blue cup", label="a blue cup", target_id=2)
        proposers = [engine._stream("cam").targets[t].proposer for t in (1, 2)]
        assert [(p.threshold, p.policy.interval_s) for p in proposers] == [(ABOVE, 4.0)] * 2
        for seed in range(3):  # the detector's every box scores OWL_SCORE: refused at ABOVE
            step = engine.step("cam", _noise(seed))
            assert [r.state for r in step.targets] == [TargetState.ACQUIRING] * 2
            assert not any(r.mask.any() for r in step.targets)
        path.update(TextSettings(grounding_threshold=BELOW))
        step = engine.step("cam", _noise(10))  # the next decision takes the box
        assert [r.state for r in step.targets] == [TargetState.TRACKED] * 2
        assert all(r.mask.any() for r in step.targets)
        with pytest.raises(ValueError, match="retry_s"):
            path.update(TextSettings(grounding_retry=float("inf")))
    finally:
        path.close()


def _scene(present: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise with a red 28 x 28 square at rows and columns 42-69 when `present`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, size=(112, 112, 3), dtype=np.uint8)
    mask = np.zeros((112, 112), dtype=bool)
    if present:
        mask[42:70, 42:70] = True
        image[mask] = (220, 30, 30)
    return image, mask


def test_acquisition_threshold_m_k_and_interval_reach_the_running_service(sam, tmp_path):
    # Random SAM2 weights draw arbitrary masks around a click: these rules accept any
    # mask of the prior's best click, so the test follows the threshold, not SAM2's quality.
    rules = ScoringRules(require_point_inside=False, max_area_fraction=1.0)
    service = AcquisitionService(DinoEncoder(save_dinov2(tmp_path / "dino")),
                                 AcquirerConfig(threshold=2.0, m=1, window=1, rules=rules), synchronous=True)
    try:
        engine = _engine(sam)
        reference, mask = _scene(True, seed=1)
        tid = engine.add_target("cam", MaskPrompt(mask), image=reference)
        proposer = service.proposer(service.prototypes([reference], [mask]))
        engine.set_proposer("cam", tid, proposer)
        frame, _ = _scene(True, seed=2)
        for _ in range(3):  # a raw score of 2 is out of reach
            step = engine.step("cam", frame)
            assert step.targets[0].state == TargetState.ACQUIRING and not step.targets[0].mask.any()
        update_acquisition(service, AcquisitionSettings(acquisition_threshold=-1.0, acquisition_m=1,
                                                        acquisition_k=2, acquisition_interval=0.0))
        assert (proposer.acquirer.config.threshold, proposer.acquirer.gate.k) == (-1.0, 2)
        assert proposer.acquirer.config.rules == rules  # what is not a live parameter is kept
        step = engine.step("cam", frame)
        assert step.targets[0].state == TargetState.TRACKED and step.targets[0].mask.any()
        assert (proposer.absence.threshold, proposer.absence.m, proposer.absence.k) == (-1.0, 1, 2)
        update_acquisition(service, AcquisitionSettings(acquisition_interval=5.0))
        assert service.worker.min_interval_s == 5.0
        later = service.proposer(service.prototypes([reference], [mask]))
        assert later.acquirer.config == service.config and later.absence.m == 2
        later.close()
        with pytest.raises(ValueError):
            update_acquisition(service, AcquisitionSettings(acquisition_threshold=float("nan")))
    finally:
        service.close()
