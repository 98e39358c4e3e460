"""Test-time geometric alignment (refseg_ros.adapters.reference.cavsam.ttga) on a small random SAM2.

sam2_hiera_t at 256 with random weights (the object-score head shifted so objects count as
present), a disc on a textured background as the example, a few tuning steps instead of
100. What is checked: the augmentative cyclic-consistency loss falls; only the target's
neck copy changes; frames keep flowing while a job tunes; a TTGA target with the untuned
neck is tracked exactly as a plain reference target, and differently once a tuned neck is
swapped in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.adapters.reference.cavsam.augment import augment_views
from refseg_ros.adapters.reference.cavsam.ttga import (TtgaCancelled, TtgaJob, TtgaTracker, TtgaTuner,
                                                start_ttga)
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine
from support.clips import moving_shapes

SIZE = 256
FRAMES = 4


@pytest.fixture(scope="module")
def engine():
    engine = SegmentationEngine.from_config(EngineConfig(model="sam2_hiera_t", image_size=SIZE, device="cpu",
                                                         seed=7))
    with torch.no_grad():  # random object scores say "absent" half the time; make them "present"
        engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 2.0
    return engine


@pytest.fixture(scope="module")
def clip():
    return moving_shapes(FRAMES + 1, SIZE, seed=3)


@pytest.fixture(scope="module")
def example(clip):
    frames, masks = clip
    return frames[0], masks[0][1]  # the disc


@pytest.fixture(scope="module")
def tuned(engine, example):
    """Six steps over two views, with the shared model's state before and after."""
    model = engine.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = TtgaTuner(model, [example], steps=6, views=2, seed=0, preprocess=engine.preprocess).run()
    return before, result


def test_augmented_views_are_seeded_and_keep_the_object(example):
    image, mask = example
    image = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    mask = torch.from_numpy(mask)
    views = augment_views(image, mask, 3, torch.Generator().manual_seed(1))
    again = augment_views(image, mask, 3, torch.Generator().manual_seed(1))
    other = augment_views(image, mask, 3, torch.Generator().manual_seed(2))
    for (v, m), (v2, m2) in zip(views, again):
        assert torch.equal(v, v2) and torch.equal(m, m2)
        assert v.shape == image.shape and v.dtype == torch.float32 and m.shape == mask.shape and m.dtype == torch.bool
        assert 0.0 <= float(v.min()) and float(v.max()) <= 1.0 and bool(m.any())
        assert not torch.equal(m, mask) and not torch.equal(v, image)
    assert not all(torch.equal(v, o) for (v, _), (o, _) in zip(views, other))
    with pytest.raises(ValueError):
        augment_views(image, torch.zeros_like(mask), 1, torch.Generator())


def test_the_cyclic_loss_falls_over_the_steps(tuned):
    _, result = tuned
    losses = result.losses
    assert len(losses) == 6 and all(np.isfinite(losses))
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])  # the same two views each time
    assert last < 0.9 * first, losses


def test_only_the_targets_neck_copy_changes(engine, tuned):
    before, result = tuned
    model = engine.model
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], f"the shared model changed: {changed[:5]}"
    assert all(p.grad is None for p in model.parameters())
    assert result.neck is not model.image_encoder.neck
    tuned_state, shared_neck = result.neck.state_dict(), model.image_encoder.neck.state_dict()
    assert tuned_state.keys() == shared_neck.keys()
    assert any(not torch.equal(tuned_state[k], shared_neck[k]) for k in tuned_state)
    assert all(not p.requires_grad for p in result.neck.parameters())


def test_a_ttga_target_with_the_untuned_neck_is_a_plain_reference_target(engine, clip, example, tuned):
    """One tracker serves the target on two streams (as the node adds a target to each of
    its cameras); on each it matches a plain reference target bit for bit until a tuned
    neck is swapped in."""
    frames, _ = clip
    image, mask = example
    engine.reset()
    tracker = TtgaTracker(engine.model, [(image, mask)], preprocess=engine.preprocess)
    ids = {}
    for stream in ("a", "b"):
        engine.add_stream(stream)
        ids[stream] = (engine.add_target(stream, MaskPrompt(mask), image=image),
                       engine.add_tracked_target(stream, tracker))
    for frame in frames[1:FRAMES]:
        for stream, (plain, ttga) in ids.items():
            out = {t.target_id: t for t in engine.step(stream, frame).targets}
            a, b = out[plain].low_res_logits, out[ttga].low_res_logits
            assert torch.equal(a, b), (stream, float((a - b).abs().max()))
            assert float(a.std()) > 0 and out[plain].score == out[ttga].score
    tracker.swap_neck(tuned[1].neck)
    for stream, (plain, ttga) in ids.items():
        out = {t.target_id: t for t in engine.step(stream, frames[FRAMES]).targets}
        assert not torch.equal(out[plain].low_res_logits, out[ttga].low_res_logits), stream
    assert tracker.tuned


def test_frames_keep_flowing_while_a_job_tunes(engine, clip, example):
    frames, _ = clip
    engine.reset()
    engine.add_stream("cam")
    tracker = start_ttga(engine.model, [example], steps=4, views=1, preprocess=engine.preprocess)
    job = tracker.job
    tid = engine.add_tracked_target("cam", tracker)
    during = []  # the job's steps done as each frame finished, while it ran
    index = 0
    while not job.done:
        engine.step("cam", frames[index % len(frames)])
        index += 1
        if not job.done:
            during.append(job.steps_done)
    assert len(during) >= 2, f"frames waited for the tuning job (steps done per frame: {during})"
    assert len(job.result(0).losses) == 4
    result = engine.step("cam", frames[0])  # the finished job's neck is in use from here on
    assert tracker.tuned and tracker.job is None and tracker.job_error is None
    assert [t.target_id for t in result.targets] == [tid]


def test_a_cancelled_job_ends_without_a_neck(engine, example):
    tuner = TtgaTuner(engine.model, [example], steps=50, views=1, preprocess=engine.preprocess)
    job = TtgaJob(tuner).start()
    job.cancel()
    with pytest.raises(TtgaCancelled):
        job.result(timeout=120)
    assert job.done and job.failed and job.steps_done < 50
