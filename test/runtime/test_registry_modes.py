"""The registry's reference modes and acquisition (ROS-free, the node's own registry):
with FSSAM, a reference target becomes an FSSAM tracker in the engine, a new example
rebuilds it with one more support, and the listing says `fssam`; with acquisition, the
target gets its prior on every camera and the listing says `acquisition`; with DBST too,
both in one proposer chain (`acquisition+dbst`); with TTGA, DBST through the target's
own neck (`ttga+dbst`); with a reference mode and acquisition, the prior gates the
mode's tracker (`fssam+acquisition`). Small random models: sam2_hiera_t at
256 (512 for FSSAM), DINOv2 of width 32, a tiny Stable Diffusion pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.adapters.reference.dino import build_dinov2
from refseg_ros.adapters.reference.fssam import FssamOptions
from refseg_ros.adapters.reference.fssam.tracker import FssamTracker
from refseg_ros.engine import EngineConfig, SegmentationEngine
from refseg_ros.engine.model import build_model
from refseg_ros.runtime.acquisition import AcquisitionSettings, open_acquisition
from refseg_ros.runtime.reference_modes import FssamMode, ReferenceSettings, open_reference_mode
from refseg_ros.runtime.recipes import Recipe, ReferenceServices, ReferenceSetup
from refseg_ros.runtime.registry import TargetRegistry
from refseg_ros.store import TaughtTarget
from support.tiny_models import save_dinov2

CAMERAS = ["/cam0/image_raw", "/cam1/image_raw"]


def _engine(image_size: int) -> SegmentationEngine:
    torch.manual_seed(0)
    sam = build_model("sam2_hiera_t", image_size=image_size).eval()
    return SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=image_size, device="cpu"),
                              random_weights=True)


@pytest.fixture(scope="module")
def engine():
    return _engine(256)


@pytest.fixture(scope="module")
def fssam_engine():
    """FSSAM runs SAM2 at 512 only."""
    return _engine(512)


def _example(seed: int):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[30:70, 40:90] = True
    return image, mask


def _setup(tracker=None, acquisition=None, transitions=None, on=("taught", "lost")):
    """The registry's reference setup for these services (the recipe they make)."""
    recipe = Recipe(getattr(tracker, "path", "baseline"), acquisition is not None, transitions is not None, on)
    return ReferenceSetup(recipe, ReferenceServices(tracker, acquisition, transitions))


def _trackers(engine, tid):
    return [engine._stream(c).targets[tid].tracker for c in CAMERAS]


def test_fssam_mode_tracks_references_with_fssam(fssam_engine):
    dino = build_dinov2(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2)
    mode = FssamMode(fssam_engine.model, dino, FssamOptions())
    registry = TargetRegistry(fssam_engine, None, CAMERAS, reference=_setup(mode))
    image, mask = _example(1)
    text = registry.teach(TaughtTarget(0, "mug", "reference", image=image, mask=mask))
    tid = int(text.split()[2])
    trackers = _trackers(fssam_engine, tid)
    assert all(isinstance(t, FssamTracker) for t in trackers) and trackers[0] is trackers[1]
    assert trackers[0].shots == 1
    assert [(s.target.target_id, s.path) for s in registry.statuses()] == [(tid, "fssam")]
    registry.add_view(tid, *_example(2))
    assert all(t.shots == 2 for t in _trackers(fssam_engine, tid))  # rebuilt with both examples
    step = fssam_engine.step(CAMERAS[0], _example(3)[0])
    assert [r.target_id for r in step.targets] == [tid]
    registry.remove(tid)
    assert fssam_engine.targets(CAMERAS[0]) == []


def test_fssam_targets_get_the_prior_as_their_absence_gate(fssam_engine):
    from refseg_ros.adapters.reference.prior.acquisition_proposer import ReferenceAcquisition
    from refseg_ros.engine import TargetState

    dino = build_dinov2(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2)
    # no dino_model: FSSAM's own DINOv2 serves the prior (as the node does in fssam mode)
    service, note = open_acquisition(AcquisitionSettings(acquisition_threshold=2.0), fssam_engine.device, dino=dino)
    assert service is not None and "FSSAM's own" in note, note
    assert service.encoder.model is dino
    try:
        registry = TargetRegistry(fssam_engine, None, CAMERAS,
                                  reference=_setup(FssamMode(fssam_engine.model, dino, FssamOptions()), service))
        image, mask = _example(1)
        tid = int(registry.teach(TaughtTarget(0, "mug", "reference", image=image, mask=mask)).split()[2])
        assert [s.path for s in registry.statuses()] == ["fssam+acquisition"]
        assert all(isinstance(fssam_engine._stream(c).targets[tid].proposer, ReferenceAcquisition) for c in CAMERAS)
        result = fssam_engine.step(CAMERAS[0], _example(3)[0]).targets[0]
        # a raw score of 2 is out of reach: FSSAM is not run and nothing is published
        assert result.state == TargetState.ACQUIRING and not result.mask.any() and result.score == 0.0
        registry.remove(tid)
    finally:
        service.close()


def test_a_missing_fssam_checkpoint_falls_back_to_the_baseline(engine):
    mode, note = open_reference_mode(ReferenceSettings("fssam", "/nowhere/fssam.pth"), engine)
    assert mode is None and "/nowhere/fssam.pth" in note and "baseline" in note
    with pytest.raises(ValueError, match="reference_mode"):
        ReferenceSettings("fssam2").check()


def test_acquisition_gives_every_camera_its_prior(engine, tmp_path):
    service, note = open_acquisition(AcquisitionSettings(dino_model=str(save_dinov2(tmp_path / "dino"))),
                                     engine.device)
    assert service is not None, note
    try:
        registry = TargetRegistry(engine, None, CAMERAS, reference=_setup(acquisition=service))
        image, mask = _example(4)
        tid = int(registry.teach(TaughtTarget(0, "cup", "reference", image=image, mask=mask)).split()[2])
        proposers = [engine._stream(c).targets[tid].proposer for c in CAMERAS]
        assert all(p is not None for p in proposers) and proposers[0] is not proposers[1]
        assert [s.path for s in registry.statuses()] == ["acquisition"]
        before = proposers[0].acquirer.prototypes.foreground.shape[0]
        registry.add_view(tid, *_example(5))
        after = engine._stream(CAMERAS[0]).targets[tid].proposer.acquirer.prototypes.foreground.shape[0]
        assert after == before + 1  # the new example's prototype joins
        registry.remove(tid)
    finally:
        service.close()
    missing, note = open_acquisition(AcquisitionSettings(dino_model=str(tmp_path / "none")), engine.device)
    assert missing is None and str(tmp_path / "none") in note


def test_ttga_mode_tracks_references_through_a_tuned_neck(engine):
    from refseg_ros.adapters.reference.cavsam.ttga import TtgaTracker
    from refseg_ros.runtime.reference_modes import TtgaMode

    registry = TargetRegistry(engine, None, CAMERAS, reference=_setup(TtgaMode(engine, steps=2, synchronous=True)))
    image, mask = _example(6)
    tid = int(registry.teach(TaughtTarget(0, "box", "reference", image=image, mask=mask)).split()[2])
    tracker = _trackers(engine, tid)[0]
    assert isinstance(tracker, TtgaTracker) and tracker.job.done  # tuned before tracking (synchronous)
    assert [s.path for s in registry.statuses()] == ["ttga"]
    step = engine.step(CAMERAS[0], _example(7)[0])
    assert [r.target_id for r in step.targets] == [tid]
    registry.add_view(tid, *_example(8))
    assert _trackers(engine, tid)[0] is not tracker  # rebuilt on both examples
    registry.remove(tid)


def test_transitions_give_reference_targets_their_dbst_proposer(engine, tmp_path):
    from support.tiny_models import save_tiny_pipeline
    from refseg_ros.adapters.reference.prior.acquisition_proposer import ReferenceAcquisition
    from refseg_ros.adapters.reference.cavsam.dbst_proposer import DbstProposer
    from refseg_ros.engine.proposer_chain import ProposerChain
    from refseg_ros.runtime.transitions import TransitionSettings, open_transitions

    torch.set_num_threads(1)
    head = engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    saved = head.detach().clone()
    with torch.no_grad():  # random weights call every transition frame absent, and those are left out
        head.fill_(10.0)
    settings = TransitionSettings(str(save_tiny_pipeline(tmp_path / "sd")), "taught", 2, 1)
    service, note = open_transitions(settings, engine, synchronous=True)
    assert service is not None, note
    try:
        registry = TargetRegistry(engine, None, CAMERAS, reference=_setup(transitions=service, on=settings.triggers()))
        image, mask = _example(9)
        tid = int(registry.teach(TaughtTarget(0, "jar", "reference", image=image, mask=mask)).split()[2])
        proposers = [engine._stream(c).targets[tid].proposer for c in CAMERAS]
        assert all(isinstance(p, DbstProposer) for p in proposers)
        assert [s.path for s in registry.statuses()] == ["dbst"]
        engine.step(CAMERAS[0], _example(10)[0])  # the job runs on this frame (synchronous) ...
        memory = engine._stream(CAMERAS[0]).targets[tid].memory
        assert 1 < len(memory.conditioning) <= 3  # ... and its frames are pinned beside the reference
        registry.remove(tid)

        # with a prior too, a reference target gets both, the prior first
        acquisition, note = open_acquisition(AcquisitionSettings(dino_model=str(save_dinov2(tmp_path / "dino"))),
                                             engine.device)
        assert acquisition is not None, note
        try:
            both = TargetRegistry(engine, None, CAMERAS, reference=_setup(
                acquisition=acquisition, transitions=service, on=settings.triggers()))
            tid = int(both.teach(TaughtTarget(0, "jar", "reference", image=image, mask=mask)).split()[2])
            chains = [engine._stream(c).targets[tid].proposer for c in CAMERAS]
            assert all(isinstance(p, ProposerChain) for p in chains) and chains[0] is not chains[1]
            assert [[type(m) for m in p.members] for p in chains] == [[ReferenceAcquisition, DbstProposer]] * 2
            assert [s.path for s in both.statuses()] == ["acquisition+dbst"]
            both.remove(tid)
            assert all(m.key not in service._contexts for m in (p.members[1] for p in chains))  # closed
        finally:
            acquisition.close()

        # TTGA targets get their transition frames through their own neck (CAV-SAM in full)
        from refseg_ros.adapters.reference.cavsam.ttga import TtgaTracker

        class Untuned:  # the registry's view of TtgaMode, without the tuning job
            path = "ttga"

            def tracker(self, images, masks):
                return TtgaTracker(engine.model, list(zip(images, masks)), preprocess=engine.preprocess)

        cavsam = TargetRegistry(engine, None, CAMERAS,
                                reference=_setup(Untuned(), transitions=service, on=settings.triggers()))
        tid = int(cavsam.teach(TaughtTarget(0, "jar", "reference", image=image, mask=mask)).split()[2])
        targets = [engine._stream(c).targets[tid] for c in CAMERAS]
        assert all(isinstance(t.proposer, DbstProposer) and t.proposer.encoder is t.tracker for t in targets)
        assert [s.path for s in cavsam.statuses()] == ["ttga+dbst"]
        cavsam.add_view(tid, *_example(11))  # a new tracker, and a proposer encoding through it
        targets = [engine._stream(c).targets[tid] for c in CAMERAS]
        assert all(t.proposer.encoder is t.tracker and len(t.tracker.examples) == 2 for t in targets)
        cavsam.remove(tid)
    finally:
        service.close()
        with torch.no_grad():
            head.copy_(saved)
    missing, note = open_transitions(TransitionSettings(str(tmp_path / "none")), engine)
    assert missing is None and str(tmp_path / "none") in note
