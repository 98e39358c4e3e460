"""Caption targets in the engine (causal SAMWISE mode) on a small model: sam2_hiera_t at
256 with PyTorch's default init, an adapter away from its zero init. No fixtures needed.

The official per-frame parity of the first frame is in test_samwise_parity.py (b+ 1024).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.adapters.text.clip_runner import ClipRunner
from refseg_ros.adapters.text.streaming import SamwiseTracker
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine, TargetState
from support.tiny_models import tiny_samwise

CAPTION_A = torch.tensor([0, 1234, 873, 40001, 2])
CAPTION_B = torch.tensor([0, 99, 31337, 2])


@pytest.fixture(scope="module")
def parts():
    sam, adapter = tiny_samwise("sam2_hiera_t", 256)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, size=(9, 96, 128, 3), dtype=np.uint8)
    return sam, adapter, frames


def _engine(sam, **config) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=256, device="cpu", **config),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


def _run(parts, frames, captions=(CAPTION_A,), window=3, cme=True):
    sam, adapter, _ = parts
    engine = _engine(sam)
    for ids in captions:
        engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, ids, window=window, cme_enabled=cme))
    return engine, [engine.step("cam", f) for f in frames]


def _logits(step, i=0):
    return step.targets[i].low_res_logits


def test_first_frame_equals_the_official_per_frame_output(parts):
    """Frame 0 with any window = the official clip of 1 frame (no memory, no neighbours)."""
    sam, adapter, frames = parts
    _, steps = _run(parts, frames[:1], window=4)
    with torch.no_grad():
        official = ClipRunner(sam, adapter, clip_window=1).run_video(frames[:1], CAPTION_A)[0]
    ours = steps[0].targets[0]
    assert float((_logits(steps[0]) - official.decoded.low_res_masks).abs().max()) < 1e-5
    assert np.array_equal(ours.mask, (official.mask_logits[0, 0] > 0).numpy())
    assert ours.mask.any()  # a mask exists to be compared
    assert ours.state == TargetState.TRACKED


def test_never_looks_ahead(parts):
    """Changing frame 5 leaves frames 0-4 bit-identical, and changes frame 5 on."""
    _, _, frames = parts
    _, base = _run(parts, frames[:7])
    changed = frames[:7].copy()
    changed[5] = 255 - changed[5]
    _, other = _run(parts, changed)
    for i in range(5):
        assert torch.equal(_logits(base[i]), _logits(other[i])), i
    assert not torch.equal(_logits(base[5]), _logits(other[5]))


def test_window_matters_after_the_first_frame(parts):
    """T = 1 and T = 3 agree on frame 0 and differ once the window holds earlier frames."""
    _, _, frames = parts
    _, one = _run(parts, frames[:3], window=1)
    _, three = _run(parts, frames[:3], window=3)
    assert torch.equal(_logits(one[0]), _logits(three[0]))
    assert float((_logits(one[2]) - _logits(three[2])).abs().max()) > 1e-4


def test_memory_stays_bounded(parts):
    sam, adapter, frames = parts
    engine = _engine(sam, max_obj_ptrs=4)
    engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=3))
    sizes = []
    for i in range(11):
        engine.step("cam", frames[i % len(frames)])
        sizes.append(engine.retained_bytes())
    # full once the memory window (6 mask memories, 3 pointers: frame 6) and the causal
    # window (2 earlier frames) are full: flat from then on
    assert sizes[6] == sizes[7] == sizes[-1]
    assert sizes[0] < sizes[-1]


def test_one_adapted_pass_per_caption_and_none_for_plain(parts, monkeypatch):
    """Two targets of one caption share a pass; another caption gets its own; the plain
    pass runs only when a target needs it."""
    sam, adapter, frames = parts
    import refseg_ros.adapters.text.streaming as streaming
    calls = {"adapted": 0, "plain": 0}
    adapted = streaming.encode_clip

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(streaming, "encode_clip", count("adapted", adapted))
    engine = _engine(sam)
    monkeypatch.setattr(engine.encoder, "encode", count("plain", engine.encoder.encode))
    a1 = engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=2))
    a2 = engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=2))
    step = engine.step("cam", frames[0])
    assert calls == {"adapted": 1, "plain": 0}
    assert torch.equal(step.targets[0].low_res_logits, step.targets[1].low_res_logits)
    engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_B, window=2))
    engine.step("cam", frames[1])
    assert calls == {"adapted": 3, "plain": 0}
    mask = np.zeros(frames.shape[1:3], dtype=bool)
    mask[30:60, 40:80] = True
    engine.add_target("cam", MaskPrompt(mask))
    engine.step("cam", frames[2])
    assert calls == {"adapted": 5, "plain": 1}
    engine.remove_target("cam", a1)
    engine.remove_target("cam", a2)
    assert len(engine._stream("cam").variants) == 1  # caption A's window is forgotten


def test_plain_target_unchanged_by_a_caption_beside_it(parts):
    sam, adapter, frames = parts
    mask = np.zeros(frames.shape[1:3], dtype=bool)
    mask[30:60, 40:80] = True
    results = []
    for with_caption in (False, True):
        engine = _engine(sam)
        engine.add_target("cam", MaskPrompt(mask), target_id=1)
        if with_caption:
            engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=2), target_id=2)
        results.append([next(t for t in engine.step("cam", f).targets if t.target_id == 1) for f in frames[:3]])
    for plain, beside in zip(*results):
        assert torch.equal(plain.low_res_logits, beside.low_res_logits)


def test_replacing_a_caption_keeps_the_id_and_starts_afresh(parts):
    sam, adapter, frames = parts
    engine = _engine(sam)
    tid = engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=2), label="a")
    for f in frames[:3]:
        engine.step("cam", f)
    engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_B, window=2), label="b",
                              target_id=tid, replace=True)
    replaced = engine.step("cam", frames[3])
    fresh = _engine(sam)
    fresh.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_B, window=2))
    first = fresh.step("cam", frames[3])
    assert [t.target_id for t in replaced.targets] == [tid]
    assert replaced.targets[0].label == "b"
    assert torch.equal(replaced.targets[0].low_res_logits, first.targets[0].low_res_logits)
    assert len(engine._stream("cam").variants) == 1


def test_cme_changes_memory_only(parts):
    """With the CME forced to switch, frame outputs before the first later frame that
    reads the switched memory are unchanged; the memory written differs."""
    sam, adapter, frames = parts
    engine_on, on = _run(parts, frames[:7], window=1, cme=True)
    engine_off, off = _run(parts, frames[:7], window=1, cme=False)
    tracker_on = engine_on._stream("cam").targets[1].tracker
    # the CME first runs on frame 5 (t > 4 and t - 0 >= 3): frames 0-5 equal either way
    for i in range(6):
        assert torch.equal(_logits(on[i]), _logits(off[i])), i
    if tracker_on.last_switch == 5:  # it switched: frame 6 reads a different memory
        assert not torch.equal(_logits(on[6]), _logits(off[6]))


def _clip_run(parts, frames, window):
    sam, adapter, _ = parts
    engine = _engine(sam)
    tid = engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=window, mode="clip"))
    got = {}
    for f in frames:
        step = engine.step("cam", f)
        for index, _, result in step.late:
            got[index] = result
        for result in step.targets:
            got[step.frame_index] = result
    for index, _, result in engine.flush("cam"):
        got[index] = result
    return tid, got


@pytest.mark.parametrize("window", [2, 1])
def test_clip_mode_is_the_official_computation(parts, window):
    """Clip mode through the engine (results late, the last short clip flushed) equals
    ClipRunner, the official clip mode that test_samwise_parity pins to the fixtures."""
    sam, adapter, frames = parts
    tid, got = _clip_run(parts, frames[:7], window)
    with torch.no_grad():
        official = ClipRunner(sam, adapter, clip_window=window).run_video(frames[:7], CAPTION_A)
    assert sorted(got) == list(range(7))
    if window == 2:  # the CME ran (frames 5 and 6), so its schedule is compared too
        assert [o.frame_idx for o in official if o.cme_logits is not None] == [5, 6]
    for out in official:
        ours = got[out.frame_idx]
        assert ours.target_id == tid
        assert float((ours.low_res_logits - out.decoded.low_res_masks).abs().max()) < 1e-4, out.frame_idx
        assert np.array_equal(ours.mask, (out.mask_logits[0, 0] > 0).numpy())


def test_clip_mode_results_come_when_the_clip_completes(parts):
    sam, adapter, frames = parts
    engine = _engine(sam)
    engine.add_tracked_target("cam", SamwiseTracker(sam, adapter, CAPTION_A, window=3, mode="clip"))
    steps = [engine.step("cam", f, stamp=float(i)) for i, f in enumerate(frames[:3])]
    assert [len(s.targets) for s in steps] == [0, 0, 1]  # nothing until the clip's last frame
    assert [(i, stamp) for i, stamp, _ in steps[2].late] == [(0, 0.0), (1, 1.0)]
    assert engine.flush("cam") == []  # nothing buffered
