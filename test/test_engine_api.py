"""Engine behaviour beyond parity: bad input, bounded memory, absence, several streams."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from clips import moving_shapes
from refseg_ros.engine import (BoxPrompt, DuplicateTargetError, EngineConfig, InvalidFrameError, InvalidPromptError,
                               MaskPrompt, PointsPrompt, SegmentationEngine, TargetState,
                               UnknownStreamError, UnknownTargetError)

SIZE = 128


@pytest.fixture(scope="module")
def clip():
    return moving_shapes(40, SIZE, seed=1)


def make_engine(**overrides) -> SegmentationEngine:
    config = EngineConfig(image_size=SIZE, device="cpu", seed=3, **overrides)
    engine = SegmentationEngine.from_config(config)
    with torch.no_grad():  # keep the random objects present (see test_engine_parity)
        engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 2.0
    return engine


@pytest.fixture(scope="module")
def engine():
    return make_engine()


def logits_of(result):
    return {t.target_id: t.low_res_logits for t in result.targets}


BAD_FRAMES = [
    (np.zeros((SIZE, SIZE), np.uint8), "H x W x 3"),
    (np.zeros((SIZE, SIZE, 4), np.uint8), "H x W x 3"),
    (np.zeros((SIZE, SIZE, 3), np.float32), "uint8"),
    (np.zeros((0, SIZE, 3), np.uint8), "too small"),
    ([[1, 2, 3]], "numpy array"),
]


@pytest.mark.parametrize("frame,message", BAD_FRAMES)
def test_bad_frames_raise_typed_errors(engine, frame, message):
    engine.add_stream("bad-frames")
    with pytest.raises(InvalidFrameError, match=message):
        engine.step("bad-frames", frame)


BAD_PROMPTS = [
    (BoxPrompt((10, 10, 10, 40)), "empty"),
    (BoxPrompt((50, 50, 20, 60)), "empty"),
    (BoxPrompt((SIZE + 5, 0, SIZE + 50, 20)), "outside"),
    (BoxPrompt((float("nan"), 0, 5, 5)), "finite"),
    (MaskPrompt(np.zeros((SIZE, SIZE), bool)), "empty"),
    (MaskPrompt(np.ones((SIZE, SIZE + 1), bool)), "image is"),
    (PointsPrompt(np.array([[5.0, 5.0]]), np.array([0])), "labelled 1"),
    (PointsPrompt(np.array([[5.0, -1.0]]), np.array([1])), "outside"),
    (PointsPrompt(np.zeros((0, 2)), np.zeros(0)), "N >= 1"),
]


@pytest.mark.parametrize("prompt,message", BAD_PROMPTS)
def test_bad_prompts_raise_typed_errors(engine, clip, prompt, message):
    frames, _ = clip
    engine.add_stream("bad-prompts")
    engine.step("bad-prompts", frames[0])  # the frame the prompt refers to
    before = engine.targets("bad-prompts")
    with pytest.raises(InvalidPromptError, match=message):
        engine.add_target("bad-prompts", prompt)
    assert engine.targets("bad-prompts") == before


def test_unknown_ids_raise_typed_errors(engine, clip):
    frames, masks = clip
    with pytest.raises(UnknownStreamError, match="nope"):
        engine.step("nope", frames[0])
    with pytest.raises(UnknownStreamError):
        engine.add_target("nope", MaskPrompt(masks[0][1]))
    engine.add_stream("ids")
    with pytest.raises(UnknownTargetError, match="99"):
        engine.remove_target("ids", 99)
    engine.add_target("ids", MaskPrompt(masks[0][1]), target_id=7)
    with pytest.raises(DuplicateTargetError, match="7 already exists"):
        engine.add_target("ids", MaskPrompt(masks[0][2]), target_id=7)


def test_errors_leave_other_streams_and_targets_untouched(clip):
    """A stream fed bad input between good frames gives exactly the clean run's output."""
    frames, masks = clip
    clean, noisy = make_engine(), make_engine()
    for engine in (clean, noisy):
        engine.add_stream("a")
        engine.add_target("a", MaskPrompt(masks[0][1]), target_id=1)
    noisy.add_stream("b")
    for index in range(8):
        expected = logits_of(clean.step("a", frames[index]))
        for bad in (np.zeros((3, 3)), np.zeros((SIZE, SIZE, 3), np.int64)):
            with pytest.raises(InvalidFrameError):
                noisy.step("a", bad)
        with pytest.raises(InvalidPromptError):
            noisy.add_target("a", MaskPrompt(np.zeros((SIZE, SIZE), bool)))
        with pytest.raises(UnknownTargetError):
            noisy.remove_target("b", 1)
        got = logits_of(noisy.step("a", frames[index]))
        assert torch.equal(got[1], expected[1])


def test_retained_memory_is_flat_in_stream_length(clip):
    frames, masks = clip
    engine = make_engine(keep_memory_when_absent=False)
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(masks[0][1]))
    engine.add_target("cam", BoxPrompt((5, 5, 60, 60)))
    sizes = []
    for index in range(40):
        engine.step("cam", frames[index % len(frames)])
        sizes.append(engine.retained_bytes())
    # Full after max_obj_ptrs frames; not a byte more for the rest of the stream.
    assert sizes[16] == sizes[39]
    assert sizes[3] < sizes[16]
    stream = engine._streams["cam"]
    for target in stream.targets.values():
        assert len(target.memory.recent) == engine.config.max_obj_ptrs - 1
        with_masks = [e for e in target.memory.recent if e.maskmem_features is not None]
        assert len(with_masks) == engine.model.num_maskmem - 1


def _silence_objects(engine, silent: bool):
    """Make the object-score head say absent (or present again)."""
    with torch.no_grad():
        engine.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += -50.0 if silent else 50.0


@pytest.mark.parametrize("keep", [True, False])
def test_absent_frames_do_not_evict_good_memories(clip, keep):
    frames, masks = clip
    engine = make_engine(keep_memory_when_absent=keep, occlusion_patience=3)
    engine.add_stream("cam")
    tid = engine.add_target("cam", MaskPrompt(masks[0][1]), label="disc")
    for index in range(8):
        engine.step("cam", frames[index])
    memory = engine._streams["cam"].targets[tid].memory
    good = [e.frame_index for e in memory.recent]
    _silence_objects(engine, True)
    states, events = [], []
    for index in range(8, 14):
        result = engine.step("cam", frames[index])
        states.append(result.targets[0].state)
        events += result.events
    if keep:
        assert [e.frame_index for e in memory.recent] == good
    else:
        assert [e.frame_index for e in memory.recent][-6:] == list(range(8, 14))
    assert states[:3] == [TargetState.OCCLUDED] * 3
    assert states[3:] == [TargetState.LOST] * 3
    assert any("lost" in e for e in events) and any("occluded" in e for e in events)
    _silence_objects(engine, False)
    result = engine.step("cam", frames[14])
    assert result.targets[0].state == TargetState.TRACKED
    assert any("re-acquired" in e for e in result.events)


def test_streams_are_independent(clip):
    """Interleaving two streams in one engine gives each the output of running it alone."""
    frames, masks = clip
    alone, shared = make_engine(), make_engine()
    alone.add_stream("a")
    alone.add_target("a", MaskPrompt(masks[0][1]), target_id=1)
    alone_out = [logits_of(alone.step("a", frames[i]))[1] for i in range(6)]
    shared.add_stream("a")
    shared.add_stream("b")
    shared.add_target("a", MaskPrompt(masks[0][1]), target_id=1)
    shared.add_target("b", MaskPrompt(masks[5][2]), target_id=2)
    for i in range(6):
        shared.step("b", frames[5 + i])
        assert torch.equal(logits_of(shared.step("a", frames[i]))[1], alone_out[i])


def test_one_image_encoder_pass_per_frame_whatever_the_number_of_targets(clip):
    frames, masks = clip
    engine = make_engine()
    calls = []
    engine.model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    engine.add_stream("cam")
    for k in range(1, 4):
        engine.add_target("cam", MaskPrompt(masks[0][k]))
    engine.add_target("cam", BoxPrompt((4, 4, 50, 50)))
    for index in range(5):
        result = engine.step("cam", frames[index])
        assert len(result.targets) == 4
    assert len(calls) == 5


def test_target_list_answers_while_a_step_holds_the_engine(clip):
    """targets() reads the summary of the last change instead of waiting out a frame."""
    frames, masks = clip
    engine = make_engine()
    engine.add_stream("cam")
    tid = engine.add_target("cam", MaskPrompt(masks[0][1]), label="disc")
    assert engine.targets("cam") == [(tid, "disc", TargetState.ACQUIRING)]
    inside, release = threading.Event(), threading.Event()

    def hold_the_step(*_) -> None:  # a forward hook; returning None keeps the output
        inside.set()
        release.wait(60)

    hook = engine.model.image_encoder.register_forward_hook(hold_the_step)
    stepping = threading.Thread(target=engine.step, args=("cam", frames[0]))
    stepping.start()
    try:
        assert inside.wait(60), "the step never reached the image encoder"
        listed: list = []
        reader = threading.Thread(target=lambda: listed.append(engine.targets("cam")))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "targets() waited for the step in progress"
        assert listed == [[(tid, "disc", TargetState.ACQUIRING)]]
    finally:
        release.set()
        stepping.join(60)
        hook.remove()
    assert engine.targets("cam") == [(tid, "disc", TargetState.TRACKED)]
    engine.remove_target("cam", tid)
    assert engine.targets("cam") == []


def test_batched_targets_equal_targets_run_one_by_one(clip):
    frames, masks = clip
    batched, single = make_engine(batch_targets=True), make_engine(batch_targets=False)
    for engine in (batched, single):
        engine.add_stream("cam")
        for k in (1, 2, 3):
            engine.add_target("cam", MaskPrompt(masks[0][k]), target_id=k)
    for index in range(10):
        a, b = logits_of(batched.step("cam", frames[index])), logits_of(single.step("cam", frames[index]))
        for k in (1, 2, 3):
            assert (a[k] - b[k]).abs().max() < 1e-4
            assert torch.equal(a[k] > 0, b[k] > 0)


def test_reference_image_prompt_and_result_fields(clip):
    """A prompt on another image (teach by example) seeds tracking on the stream."""
    frames, masks = clip
    engine = make_engine()
    engine.add_stream("cam")
    tid = engine.add_target("cam", MaskPrompt(masks[3][1]), label="disc", image=frames[3])
    assert engine.targets("cam") == [(tid, "disc", TargetState.ACQUIRING)]
    frame = np.ascontiguousarray(frames[4][:96, :112])  # any frame size works
    result = engine.step("cam", frame, stamp=12.5)
    (target,) = result.targets
    assert result.stamp == 12.5 and result.frame_index == 0
    assert target.mask.shape == (96, 112) and target.mask.dtype == bool
    assert 0.0 <= target.score <= 1.0
    if target.mask.any():
        ys, xs = np.nonzero(target.mask)
        assert target.box == (xs.min(), ys.min(), xs.max(), ys.max())
    else:
        assert target.box is None


def test_k_shot_references_are_pinned_side_by_side(clip):
    frames, masks = clip
    engine = make_engine()
    engine.add_stream("cam")
    tid = engine.add_target("cam", MaskPrompt(masks[2][1]), label="disc", image=frames[2])
    engine.add_reference("cam", tid, MaskPrompt(masks[6][1]), image=frames[6])
    engine.add_reference("cam", tid, BoxPrompt((1.0, 1.0, 60.0, 60.0)), image=frames[9])
    memory = engine._streams["cam"].targets[tid].memory
    assert sorted(memory.conditioning) == [-3, -2, -1]
    for index in range(12):
        engine.step("cam", frames[10 + index])
    selection = memory.select(12)
    assert [t for t, _ in selection.masks].count(0) == 3  # every reference stays in attention
    assert len(memory.conditioning) == 3 and len(memory.recent) == 12
    with pytest.raises(UnknownTargetError):
        engine.add_reference("cam", 99, MaskPrompt(masks[6][1]), image=frames[6])
    with pytest.raises(InvalidPromptError):
        engine.add_reference("cam", tid, MaskPrompt(np.zeros((SIZE, SIZE), bool)), image=frames[6])
    assert len(memory.conditioning) == 3
