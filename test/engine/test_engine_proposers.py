"""The engine's proposer seam with real proposers: a caption found by a tiny OWLv2 through
the grounding worker, and a reference target found again by its DINOv2 prior. SAM2 is
sam2_hiera_t at 256 with random weights; its object head is set to say "present", or
"absent" to force a loss.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from refseg_ros.adapters.grounding import GroundingWorker
from refseg_ros.adapters.grounding.proposer import GroundingProposer
from refseg_ros.adapters.reference.prior.acquisition import AcquirerConfig
from refseg_ros.adapters.reference.prior.candidates import ScoringRules
from refseg_ros.adapters.reference.prior.acquisition_proposer import AcquisitionService
from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder
from refseg_ros.adapters.reference.cavsam.ttga import TtgaTracker
from refseg_ros.engine import EngineConfig, MaskPrompt, PointsPrompt, SegmentationEngine, TargetState
from refseg_ros.engine.seams import Absent, Seed
from support.tiny_models import OWL_SCORE, load_owl, noise_reference, present_sam, save_dinov2, save_owlv2, say_present

HEIGHT, WIDTH = 96, 128


@pytest.fixture(scope="module")
def sam():
    model = present_sam()
    return model


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return load_owl(save_owlv2(tmp_path_factory.mktemp("owl") / "owlv2"))


def _engine(sam, **config) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu", **config),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def _settle(worker, key, timeout: float = 30.0) -> None:
    """Wait until the worker has nothing waiting or running for `key`."""
    end = time.monotonic() + timeout
    while worker.pending(key):
        assert time.monotonic() < end, "the grounding worker did not finish"
        time.sleep(0.01)


def test_caption_is_grounded_then_tracked(sam, detector):
    with GroundingWorker(detector) as worker:
        engine = _engine(sam)
        proposer = GroundingProposer(worker, "a red cup", threshold=0.5)
        tid = engine.add_proposed_target("cam", proposer, label="a red cup")
        frames = _frames(4)
        first = engine.step("cam", frames[0])
        # the detector was only asked: no box yet, so no mask and still acquiring
        assert first.targets[0].state == TargetState.ACQUIRING
        assert not first.targets[0].mask.any()
        _settle(worker, proposer.key)
        second = engine.step("cam", frames[1])
        result = second.targets[0]
        assert result.target_id == tid
        assert result.state == TargetState.TRACKED and result.mask.any()
        assert any("seeded: grounded 'a red cup'" in e for e in second.events)
        assert list(engine._stream("cam").targets[tid].memory.conditioning) == [1]
        third = engine.step("cam", frames[2])
        assert third.targets[0].state == TargetState.TRACKED  # tracked with memory from then on


def test_a_caption_that_matches_nothing_gives_no_mask(sam, detector):
    with GroundingWorker(detector) as worker:
        engine = _engine(sam)
        proposer = GroundingProposer(worker, "a red cup", threshold=min(1.0, OWL_SCORE + 0.05))
        engine.add_proposed_target("cam", proposer)
        events = []
        for frame in _frames(4):
            step = engine.step("cam", frame)
            events += step.events
            assert step.targets[0].state == TargetState.ACQUIRING
            assert not step.targets[0].mask.any() and step.targets[0].score == 0.0
            _settle(worker, proposer.key)
        assert worker.completed >= 3  # it kept looking
        assert sum("not in view yet" in e for e in events) == 1


def test_a_lost_target_is_grounded_again_without_wiping_its_memory(sam, detector):
    with GroundingWorker(detector) as worker:
        engine = _engine(sam, occlusion_patience=1, max_seeds=2)
        proposer = GroundingProposer(worker, "a red cup", threshold=0.5)
        tid = engine.add_proposed_target("cam", proposer)
        frames = iter(_frames(40, seed=3))
        engine.step("cam", next(frames))
        _settle(worker, proposer.key)
        assert engine.step("cam", next(frames)).targets[0].state == TargetState.TRACKED
        memory = engine._stream("cam").targets[tid].memory
        try:
            for cycle in range(3):
                assert engine.step("cam", next(frames)).targets[0].state == TargetState.TRACKED
                tracked_frames = len(memory.recent)
                assert tracked_frames > 0
                say_present(sam, present=False)
                states = [engine.step("cam", next(frames)).targets[0].state for _ in range(2)]
                assert states == [TargetState.OCCLUDED, TargetState.LOST]
                say_present(sam, present=True)
                lost = engine.step("cam", next(frames))  # asks the detector again
                assert lost.targets[0].state == TargetState.LOST and not lost.targets[0].mask.any()
                _settle(worker, proposer.key)
                back = engine.step("cam", next(frames))
                assert back.targets[0].target_id == tid
                assert back.targets[0].state == TargetState.TRACKED, cycle
                assert any("re-acquired" in e for e in back.events)
                assert 0 < len(memory.conditioning) <= 2  # seeds add, the oldest beyond max_seeds goes
                assert len(memory.recent) >= tracked_frames  # what it tracked is still there
        finally:
            say_present(sam, present=True)


def test_removing_the_target_cancels_its_grounding(sam, detector):
    with GroundingWorker(detector) as worker:
        engine = _engine(sam)
        proposer = GroundingProposer(worker, "a red cup", threshold=0.5)
        tid = engine.add_proposed_target("cam", proposer)
        engine.step("cam", _frames(1)[0])
        engine.remove_target("cam", tid)
        _settle(worker, proposer.key)
        assert worker.poll(proposer.key) is None


# ------------------------------------------------------------------ reference acquisition
def _scene(with_object: bool, row: int, col: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise, and a red 28 x 28 square at (row, col) pixels when `with_object`."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, size=(112, 112, 3), dtype=np.uint8)
    mask = np.zeros((112, 112), dtype=bool)
    if with_object:
        mask[row:row + 28, col:col + 28] = True
        image[mask] = (220, 30, 30)
    return image, mask


def test_reference_target_is_withheld_while_absent_and_reacquired(sam, tmp_path):
    encoder = DinoEncoder(save_dinov2(tmp_path / "dino"))
    # Random SAM2 weights draw arbitrary masks around a click: the gate here accepts any
    # mask of the prior's best click, so the test follows the seam, not SAM2's quality.
    rules = ScoringRules(require_point_inside=False, max_area_fraction=1.0)
    service = AcquisitionService(encoder, AcquirerConfig(threshold=-1.0, m=1, window=1, rules=rules))
    try:
        engine = _engine(sam)
        reference, mask = _scene(True, 28, 28, seed=1)
        tid = engine.add_target("cam", MaskPrompt(mask), image=reference)
        proposer = service.proposer(service.prototypes([reference], [mask]))
        engine.set_proposer("cam", tid, proposer)
        absent = [engine.step("cam", _scene(False, 0, 0, seed=10 + i)[0]) for i in range(2)]
        for step in absent:  # not seeded: nothing published, whatever SAM2's memory says
            assert step.targets[0].state == TargetState.ACQUIRING and not step.targets[0].mask.any()
        present, _ = _scene(True, 56, 42, seed=20)
        seen = None
        for i in range(6):
            step = engine.step("cam", present)
            if step.targets[0].state == TargetState.TRACKED:
                seen = step
                break
            end = time.monotonic() + 30
            while service.worker.wants(proposer.key) is False and time.monotonic() < end:
                time.sleep(0.01)  # let the prior finish on the frame it was given
        assert seen is not None, "the prior never seeded the target"
        assert seen.targets[0].mask.any()
        assert any("found by its prior" in e for e in seen.events)
        tid_memory = engine._stream("cam").targets[tid].memory
        assert len(tid_memory.conditioning) == 2  # the reference and the seed
        x, y = proposer.last_click  # on the object: rows 56-83, columns 42-69
        assert 42 <= x < 70 and 56 <= y < 84
    finally:
        service.close()


class _Scripted:
    """A proposer that answers from a script, one answer per frame (the seam's protocol)."""

    gates_output = True

    def __init__(self, answers):
        self.answers = list(answers)

    def propose(self, model, features, frame, index, state, box):
        return self.answers.pop(0) if self.answers else None

    def close(self):
        pass


def test_absent_declares_a_tracked_target_lost_and_a_seed_brings_it_back(sam):
    engine = _engine(sam)
    click = Seed(PointsPrompt(np.array([[64.0, 48.0]], dtype=np.float32), np.array([1])), "scripted")
    tid = engine.add_proposed_target("cam", _Scripted([click, None, Absent("gone"), None, click]), label="cup")
    steps = [engine.step("cam", frame) for frame in _frames(5, seed=7)]
    states = [step.targets[0].state for step in steps]
    assert states == [TargetState.TRACKED, TargetState.TRACKED, TargetState.LOST, TargetState.LOST,
                      TargetState.TRACKED]
    assert steps[1].targets[0].mask.any()  # this SAM2 says "present": it would draw a mask
    assert not steps[2].targets[0].mask.any() and not steps[3].targets[0].mask.any()
    assert f"target {tid} (cup) lost: gone" in steps[2].events and not steps[3].events
    assert any("re-acquired" in e for e in steps[4].events)
    memory = engine._stream("cam").targets[tid].memory
    assert list(memory.conditioning) == [0, 4]  # the first seed is still there
    assert not memory.recent  # frame 1, tracked before it went, is forgotten; frame 4 is a seed


def test_a_gating_proposer_decides_when_a_tracker_target_runs(sam):
    """A TTGA target (a tracker on the plain pass) with a gating proposer: its tracker
    runs only once the proposer found it, and not while it is lost."""
    engine = _engine(sam)
    tracker = TtgaTracker(sam, [noise_reference(HEIGHT, WIDTH)], preprocess=engine.preprocess)
    tid = engine.add_tracked_target("cam", tracker, label="cup")
    click = Seed(PointsPrompt(np.array([[64.0, 48.0]], dtype=np.float32), np.array([1])), "scripted")
    engine.set_proposer("cam", tid, _Scripted([None, click, None, Absent("gone"), None, click]))
    memory = engine._stream("cam").targets[tid].memory
    states, masked, written = [], [], []
    for frame in _frames(6, seed=4):
        step = engine.step("cam", frame)
        states.append(step.targets[0].state)
        masked.append(bool(step.targets[0].mask.any()))
        written.append(len(memory.recent))
    assert states == [TargetState.ACQUIRING, TargetState.TRACKED, TargetState.TRACKED, TargetState.LOST,
                      TargetState.LOST, TargetState.TRACKED]
    assert masked == [False, True, True, False, False, True]
    assert written == [0, 1, 2, 0, 0, 1]  # run only when found or tracked; its frames forgotten when gone
    assert len(memory.conditioning) == 1  # its example only: a seed's prompt is not pinned


def test_a_tracker_with_its_own_features_takes_no_proposer(sam):
    engine = _engine(sam)

    class OwnFeatures:
        variant_key = "own"

    tid = engine._add_adapter_target("cam", "", None, False, tracker=OwnFeatures())
    with pytest.raises(ValueError, match="features of its own"):
        engine.set_proposer("cam", tid, _Scripted([]))
