"""Engine behaviour beyond parity: bad input, bounded memory, absence, several streams."""

from __future__ import annotations

import math
import re
import threading

import numpy as np
import pytest
import torch

from refseg_ros.engine import (BoxPrompt, DuplicateTargetError, InvalidFrameError, InvalidPromptError,
                               MaskPrompt, PointsPrompt, SegmentationEngine, TargetState,
                               UnknownStreamError, UnknownTargetError)
from refseg_ros.engine.errors import PromptBelowResolutionError
from support.clips import moving_shapes
from support.engines import SIZE, make_engine

@pytest.fixture(scope="module")
def clip():
    return moving_shapes(40, SIZE, seed=1)


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
    engine.model.image_encoder.trunk.register_forward_hook(lambda *args: calls.append(1))  # encode_image runs it
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

    hook = engine.model.image_encoder.trunk.register_forward_hook(hold_the_step)
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


# ------------------------------------------------------- prompts at the model's resolution
HD_H, HD_W = 1080, 1920


@pytest.fixture(scope="module")
def sized_engines():
    """Engines by image_size, built when first asked for."""
    built: dict[int, SegmentationEngine] = {}

    def get(size: int) -> SegmentationEngine:
        if size not in built:
            built[size] = make_engine(size)
        return built[size]

    return get


def block(height: int, width: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y:y + h, x:x + w] = True
    return mask


def pinned(engine, stream):
    return {tid: len(t.memory.conditioning) for tid, t in engine._streams[stream].targets.items()}


VANISHING_MASKS = [
    # image_size, image (H, W), mask block (x, y, w, h), what the refusal names
    (256, (HD_H, HD_W), (900, 500, 2, 2),
     r"mask covers 4 pixels \(a 2x2 box\) of the 1920x1080 image.*empty at the model's 256x256 input"
     r".*at least 60x34 pixels"),
    (1024, (HD_H, HD_W), (900, 500, 1, 1),
     r"mask covers 1 pixel \(a 1x1 box\) of the 1920x1080 image.*empty at the model's 1024x1024 input"
     r".*at least 15x9 pixels"),
    # Not resized (the image is the model's size), but gone from SAM2's 32x32 mask prompt.
    (SIZE, (SIZE, SIZE), (60, 60, 2, 2),
     r"mask covers 4 pixels \(a 2x2 box\) of the 128x128 image.*vanishes from SAM2's 32x32 mask prompt"
     r".*at least 8x8 pixels"),
]


@pytest.mark.parametrize("size,shape,rect,reason", VANISHING_MASKS)
def test_mask_that_vanishes_at_the_model_resolution_is_refused(sized_engines, size, shape, rect, reason):
    """A 2x2-pixel mask of a 1920x1080 image is nothing at image_size 256: refused, not taught."""
    engine = sized_engines(size)
    stream = f"vanishing-{size}-{shape[1]}"
    engine.add_stream(stream)
    mask = block(*shape, *rect)
    image = np.zeros(shape + (3,), np.uint8)
    before = engine.targets(stream)
    with pytest.raises(PromptBelowResolutionError, match=reason):  # teach by example
        engine.add_target(stream, MaskPrompt(mask), label="speck", image=image)
    with pytest.raises(PromptBelowResolutionError, match=reason):  # on the stream's next frame
        engine.add_target(stream, MaskPrompt(mask), label="speck")
    assert engine.targets(stream) == before
    tid = engine.add_target(stream, MaskPrompt(block(*shape, 0, 0, shape[1], shape[0])), label="all")
    with pytest.raises(PromptBelowResolutionError, match=reason):  # one more example (k-shot)
        engine.add_reference(stream, tid, MaskPrompt(mask), image)
    assert pinned(engine, stream) == {tid: 0}
    engine.remove_target(stream, tid)


@pytest.mark.parametrize("size,shape", [(256, (HD_H, HD_W)), (SIZE, (SIZE, SIZE)), (1024, (HD_H, HD_W))])
def test_the_size_a_refusal_names_is_enough(sized_engines, size, shape):
    """A solid region of the size the refusal asks for is taught wherever it lies: at
    every offset across two cells of the mask prompt, at the corners, at random places."""
    height, width = shape
    engine = sized_engines(size)
    stream = f"named-size-{size}-{width}"
    engine.add_stream(stream)
    with pytest.raises(PromptBelowResolutionError) as refused:
        engine.add_target(stream, MaskPrompt(block(height, width, 60, 60, 1, 1)))
    w, h = map(int, re.search(r"at least (\d+)x(\d+) pixels", str(refused.value)).groups())
    cell_w, cell_h = math.ceil(width * 4 / size), math.ceil(height * 4 / size)
    rng = np.random.default_rng(0)
    places = [(x, y) for x in range(2 * cell_w) for y in range(2 * cell_h)]
    places += [(0, 0), (width - w, height - h)]
    places += [(rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)) for _ in range(10)]
    for x, y in places:
        tid = engine.add_target(stream, MaskPrompt(block(height, width, int(x), int(y), w, h)))
        engine.remove_target(stream, tid)


VGA_H, VGA_W = 480, 640  # at image_size 128 one model pixel is 5 x 3.75 image pixels

DEGENERATE_PROMPTS = [
    (BoxPrompt((100, 100, 104, 300)),
     r"box \(100, 100, 104, 300\) spans 4x200 pixels of the 640x480 image, 0.80x53.33 pixels at the "
     r"model's 128x128 input.*one model pixel each way, here 5x3.75 image pixels"),
    (BoxPrompt((100, 200, 400, 203.5)), r"spans 300x3.5 pixels.*60.00x0.93 pixels at the model's 128x128"),
    (BoxPrompt((-40, 100, 2, 300)), r"spans 2x200 pixels of the 640x480 image \(inside it\)"),
    (PointsPrompt(np.array([[100.0, 100.0], [103.0, 101.0]]), np.array([1, 0])),
     r"object point \(100, 100\) and background point \(103, 101\) .* are 0.66 model pixels apart"),
    (PointsPrompt(np.array([[50.0, 50.0], [300.0, 300.0], [50.0, 50.0]]), np.array([1, 1, 0])),
     r"object point \(50, 50\) and background point \(50, 50\) .* are 0.00 model pixels apart"),
    (PointsPrompt(np.array([[VGA_W + 0.5, 10.0]]), np.array([1])), "outside the image"),
    (PointsPrompt(np.array([[10.0, VGA_H]]), np.array([1])), "outside the image"),
]


@pytest.mark.parametrize("prompt,reason", DEGENERATE_PROMPTS)
def test_boxes_and_points_that_degenerate_at_the_model_resolution_are_refused(engine, prompt, reason):
    image = np.zeros((VGA_H, VGA_W, 3), np.uint8)
    engine.add_stream("degenerate")
    before = engine.targets("degenerate")
    with pytest.raises(InvalidPromptError, match=reason):
        engine.add_target("degenerate", prompt, image=image)
    assert engine.targets("degenerate") == before


@pytest.mark.parametrize("prompt", [
    BoxPrompt((630, 100, 700, 300)),  # clipped to 10 pixels inside the image: 2 model pixels
    BoxPrompt((100, 100, 105, 104)),  # one model pixel each way, just
    PointsPrompt(np.array([[100.0, 100.0], [105.0, 100.0]]), np.array([1, 0])),  # one model pixel apart
])
def test_boxes_and_points_of_a_model_pixel_are_taught(engine, prompt):
    image = np.zeros((VGA_H, VGA_W, 3), np.uint8)
    engine.add_stream("model-pixel")
    tid = engine.add_target("model-pixel", prompt, image=image)
    assert [t for t, _, _ in engine.targets("model-pixel")] == [tid]
    engine.remove_target("model-pixel", tid)


def test_prompt_for_the_next_frame_is_checked_against_the_last_frame_size(engine):
    """Without an image, a box or points lie on the stream's next frame: refused at once
    when the last frame makes them degenerate, and rejected with an event when the next
    frame turns out to have another size."""
    engine.add_stream("next-frame")
    engine.step("next-frame", np.zeros((VGA_H, VGA_W, 3), np.uint8))
    with pytest.raises(PromptBelowResolutionError, match="model's 128x128 input"):
        engine.add_target("next-frame", BoxPrompt((100, 100, 104, 300)))
    with pytest.raises(PromptBelowResolutionError, match="model pixels apart"):
        engine.add_target("next-frame", PointsPrompt(np.array([[10.0, 10.0], [11.0, 10.0]]),
                                                     np.array([1, 0])))
    assert engine.targets("next-frame") == []
    tid = engine.add_target("next-frame", BoxPrompt((100, 100, 108, 300)))  # 1.6 model pixels wide
    result = engine.step("next-frame", np.zeros((HD_H, HD_W, 3), np.uint8))  # 0.53 on this frame
    assert result.targets == [] and engine.targets("next-frame") == []
    assert len(result.events) == 1 and result.events[0].startswith(f"target {tid} rejected: box")
    assert "1920x1080" in result.events[0]


# ----------------------------------------------------------------------- target states
def run_states(engine, stream, presence, frames):
    """Step one frame per entry of `presence` (True: object head says present)."""
    out, silent = [], False
    for index, present in enumerate(presence):
        if present == silent:  # toggle only on change
            _silence_objects(engine, not present)
            silent = not present
        result = engine.step(stream, frames[index % len(frames)])
        (target,) = result.targets
        out.append((target.state, result.events))
    if silent:
        _silence_objects(engine, False)
    return out


A, T, O, L = TargetState.ACQUIRING, TargetState.TRACKED, TargetState.OCCLUDED, TargetState.LOST


def test_every_state_transition_says_so_once(clip):
    """A reference target absent from its first frames stays acquiring (it was never seen)
    and says once that it is not in view yet; then every change of state is one event."""
    frames, masks = clip
    engine = make_engine(occlusion_patience=2)
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(masks[3][1]), label="disc", image=frames[3])
    presence = [False, False, False, True, True, False, False, False, False, True, False, True, True]
    expected = [
        (A, "not in view yet"), (A, None), (A, None),  # absent from its first frames
        (T, "tracked"), (T, None),  # first seen
        (O, "occluded"), (O, None), (L, "lost"), (L, None),  # gone longer than the patience
        (T, "re-acquired"),
        (O, "occluded"), (T, "re-acquired"), (T, None),
    ]
    got = run_states(engine, "cam", presence, frames)
    for index, ((state, events), (want_state, want_event)) in enumerate(zip(got, expected)):
        assert state == want_state, f"frame {index}: {state.value}, expected {want_state.value}"
        if want_event is None:
            assert events == [], f"frame {index}: no change, yet events {events}"
        else:
            assert len(events) == 1 and want_event in events[0] and "target 1 (disc)" in events[0], \
                f"frame {index}: events {events}, expected one saying {want_event!r}"


def test_without_patience_a_tracked_target_is_lost_at_once(clip):
    frames, masks = clip
    engine = make_engine(occlusion_patience=0)
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(masks[0][1]), label="disc")  # the prompt frame shows it
    got = run_states(engine, "cam", [True, False, False, True], frames)
    assert [s for s, _ in got] == [T, L, L, T]
    assert [len(e) for _, e in got] == [1, 1, 0, 1]
    assert "tracked" in got[0][1][0] and "lost" in got[1][1][0] and "re-acquired" in got[3][1][0]


def test_a_target_never_seen_stays_acquiring_and_is_not_lost(clip):
    """Patience counts frames since the target was last seen; one never seen is still
    being looked for, however long, and says so once."""
    frames, masks = clip
    engine = make_engine(occlusion_patience=1)
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(masks[3][1]), label="disc", image=frames[3])
    got = run_states(engine, "cam", [False] * 5 + [True], frames)
    assert [s for s, _ in got] == [A] * 5 + [T]
    assert [len(e) for _, e in got] == [1, 0, 0, 0, 0, 1]
