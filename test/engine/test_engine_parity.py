"""The engine, fed frame by frame, against sam2's own SAM2VideoPredictor on the same weights.

The first clip is square at the model's size (no resize on either side); the camera clip
is 640x480 and shows what each EngineConfig.preprocessing rule gives on camera-sized
frames (`pytest test/engine/test_engine_parity.py -k camera -s` prints the measured differences).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from refseg_ros.engine.frames import FramePreprocessor
from refseg_ros.engine.official import OfficialPrompt, jpeg_clip, official_predictor, run_official
from refseg_ros.engine import BoxPrompt, EngineConfig, MaskPrompt, PointsPrompt, SegmentationEngine
from refseg_ros.engine import memory as memory_module
from support.clips import moving_shapes
from support.slow import slow_parity

SIZE = 256
FRAMES = 24  # past num_maskmem (7) and past max_obj_ptrs (16)
LATE_FRAME = 10
TOL = 1e-4
CAMERA = (480, 640)  # H, W of the camera clip


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _clicks(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One click inside the object and one outside it."""
    ys, xs = np.nonzero(mask)
    inside = (float(xs.mean()), float(ys.mean()))
    return np.array([inside, (2.0, 2.0)], np.float32), np.array([1, 0], np.int32)


@pytest.fixture(scope="module")
def clip():
    return moving_shapes(FRAMES, SIZE, seed=3)


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig(image_size=SIZE, device="cpu", keep_memory_when_absent=False, seed=7)
    engine = SegmentationEngine.from_config(config)
    # A random object-score head calls objects absent about half the time, and an absent
    # object's mask is a constant (-1024) that would make the comparison vacuous. Shift
    # it so the objects count as present; both sides get the same weights.
    # SAM2 initialises its learned embeddings (temporal codes, no-memory and no-object
    # embeddings) at std 0.02, too small to move a random network's outputs; give them
    # unit scale (and the pointers' time projection a larger one) so that a wrong
    # temporal slot, a misdated pointer or a missing embedding shows.
    model = engine.model
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 2.0
        generator = torch.Generator().manual_seed(11)
        for param in (model.maskmem_tpos_enc, model.no_mem_embed, model.no_mem_pos_enc,
                      model.no_obj_ptr, model.no_obj_embed_spatial):
            param.copy_(torch.randn(param.shape, generator=generator))
        model.obj_ptr_tpos_proj.weight.mul_(20.0)
    return engine


@pytest.fixture(scope="module")
def official(engine, clip):
    """Objects 1, 3 by mask and 2 by box on frame 0, run by the official predictor."""
    frames, masks = clip
    predictor = official_predictor(engine.model, engine.config.model, SIZE)
    logits, decoded = run_official(predictor, frames, _first_frame_prompts(masks))
    clicks, labels = _clicks(masks[LATE_FRAME][1])
    late_logits, _ = run_official(predictor, frames, [OfficialPrompt(4, LATE_FRAME, points=clicks, labels=labels)],
                                  start_frame=LATE_FRAME)
    return logits, late_logits, decoded


def _first_frame_prompts(masks) -> list[OfficialPrompt]:
    """Objects 1, 3 by mask and 2 by box on frame 0 (the engine's _run_engine adds the same)."""
    return [OfficialPrompt(1, 0, mask=masks[0][1]), OfficialPrompt(2, 0, box=_box(masks[0][2])),
            OfficialPrompt(3, 0, mask=masks[0][3])]


def _run_engine(engine, decoded, masks, late: bool = True):
    engine.reset()
    engine.add_stream("cam")
    engine.add_target("cam", MaskPrompt(masks[0][1]), target_id=1)
    engine.add_target("cam", BoxPrompt(_box(masks[0][2])), target_id=2)
    engine.add_target("cam", MaskPrompt(masks[0][3]), target_id=3)
    outputs = []
    for index, frame in enumerate(decoded):
        if late and index == LATE_FRAME:
            engine.add_target("cam", PointsPrompt(*_clicks(masks[LATE_FRAME][1])), target_id=4)
        result = engine.step("cam", frame, float(index))
        outputs.append({t.target_id: t.low_res_logits for t in result.targets})
    return outputs


def _worst(outputs, reference, ids, start=0):
    worst, mismatched = 0.0, []
    for index in range(start, len(outputs)):
        for oid in ids:
            ours, theirs = outputs[index][oid], reference[index][oid]
            worst = max(worst, (ours - theirs).abs().max().item())
            if not torch.equal(ours > 0, theirs > 0):
                mismatched.append((index, oid))
    return worst, mismatched


@pytest.fixture(scope="module")
def engine_outputs(engine, clip, official):
    _, masks = clip
    return _run_engine(engine, official[2], masks)


def test_objects_prompted_on_first_frame_match_official(official, engine_outputs):
    worst, mismatched = _worst(engine_outputs, official[0], ids=(1, 2, 3))
    assert worst < TOL, f"max abs difference of low-res logits {worst}"
    assert mismatched == []


def test_object_clicked_on_later_frame_matches_official_from_that_frame(official, engine_outputs):
    worst, mismatched = _worst(engine_outputs, official[1], ids=(4,), start=LATE_FRAME)
    assert worst < TOL, f"max abs difference of low-res logits {worst}"
    assert mismatched == []


def test_masks_depend_on_memory(engine_outputs):
    """The clip must exercise memory: outputs are neither constant nor saturated."""
    logits = torch.stack([engine_outputs[i][1] for i in range(1, FRAMES)])
    assert logits.std() > 1e-3
    foreground = [(engine_outputs[i][1] > 0).float().mean().item() for i in range(1, FRAMES)]
    assert 0.0 < min(foreground) and max(foreground) < 1.0


def _mutant_select(kind: str):
    original = memory_module.TargetMemory.select

    def select(self, frame_index):
        chosen = original(self, frame_index)
        if kind == "wrong_temporal_slots":
            chosen.masks = [(t if t == 0 else min(t + 1, self.num_maskmem - 1), e) for t, e in chosen.masks]
        elif kind == "too_few_frames":
            chosen.masks = [m for m in chosen.masks if m[0] != 1]
        elif kind == "no_object_pointers":
            chosen.pointers = []
        elif kind == "misdated_pointers":
            chosen.pointers = [(d + 3, e) for d, e in chosen.pointers]
        return chosen

    return select


@slow_parity
@pytest.mark.parametrize("kind", ["wrong_temporal_slots", "too_few_frames", "no_object_pointers",
                                  "misdated_pointers"])
def test_parity_check_detects_a_broken_memory_selection(kind, engine, clip, official, monkeypatch):
    """The parity comparison above fails when memory selection or encodings are wrong."""
    _, masks = clip
    monkeypatch.setattr(memory_module.TargetMemory, "select", _mutant_select(kind))
    outputs = _run_engine(engine, official[2], masks, late=False)
    worst, _ = _worst(outputs, official[0], ids=(1, 2, 3))
    assert worst > TOL, f"{kind}: a broken selection went unnoticed (max diff {worst})"


# ------------------------------------------------------------------ camera-sized frames
def _camera_frames(num_frames: int, height: int, width: int, seed: int):
    """moving_shapes at width x width, cropped to the top `height` rows (frames and masks)."""
    frames, masks = moving_shapes(num_frames, width, seed=seed)
    return [f[:height] for f in frames], [{k: m[:height] for k, m in d.items()} for d in masks]


@pytest.fixture(scope="module")
def camera_clip():
    return _camera_frames(FRAMES, *CAMERA, seed=5)


@pytest.fixture(scope="module")
def camera_official(engine, camera_clip):
    """The official predictor on the 640x480 clip: (logits per frame per object, decoded frames)."""
    frames, masks = camera_clip
    predictor = official_predictor(engine.model, engine.config.model, SIZE)
    return run_official(predictor, frames, _first_frame_prompts(masks))


def _report(rule: str, outputs, reference, ids=(1, 2, 3)) -> tuple[float, list]:
    """Print and return the worst logit difference and the (frame, object) masks that differ."""
    worst, mismatched = _worst(outputs, reference, ids=ids)
    pixels = sum(int(((outputs[i][k] > 0) != (reference[i][k] > 0)).sum()) for i in range(len(outputs)) for k in ids)
    total = sum(reference[i][k].numel() for i in range(len(outputs)) for k in ids)
    print(f"\n{CAMERA[1]}x{CAMERA[0]} -> {SIZE}, preprocessing={rule}: max abs low-res logit difference "
          f"{worst:.3g}; {len(mismatched)} of {len(outputs) * len(ids)} masks differ, in {pixels} of {total} pixels")
    return worst, mismatched


def _engine_with(engine, preprocessing: str) -> SegmentationEngine:
    """Another engine on the same model (so the same weights), with another preprocessing rule."""
    return SegmentationEngine(engine.model, replace(engine.config, preprocessing=preprocessing), random_weights=True)


@pytest.mark.parametrize("height, width, size", [(480, 640, 256), (240, 320, 256), (96, 128, 128), (256, 256, 256)])
def test_official_preprocessing_is_sam2s_input_bit_for_bit(height, width, size):
    """preprocessing="official" turns the decoded frames into exactly the tensor SAM2's JPEG
    loader makes; "device" does too at the model's size and only there."""
    from sam2.utils.misc import load_video_frames_from_jpg_images

    frames, _ = _camera_frames(2, height, width, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        decoded = jpeg_clip(frames, folder)
        theirs, _, _ = load_video_frames_from_jpg_images(folder, size, offload_video_to_cpu=True,
                                                          compute_device=torch.device("cpu"))
    cpu = torch.device("cpu")
    official = torch.cat([FramePreprocessor(size, cpu, "official")(f) for f in decoded])
    device = torch.cat([FramePreprocessor(size, cpu, "device")(f) for f in decoded])
    assert official.shape == device.shape == (2, 3, size, size) and official.dtype == torch.float32
    assert torch.equal(official, theirs)
    worst = (device - theirs).abs().max().item()
    print(f"\n{width}x{height} -> {size}: device rule vs SAM2's input, max abs {worst:.3g} (normalised units)")
    assert (worst == 0.0) == ((height, width) == (size, size))


def test_unknown_preprocessing_rule_is_refused():
    with pytest.raises(ValueError, match="preprocessing must be one of device, official"):
        FramePreprocessor(SIZE, torch.device("cpu"), "pil")


@slow_parity
def test_camera_sized_frames_match_official_with_official_preprocessing(engine, camera_clip, camera_official):
    _, masks = camera_clip
    logits, decoded = camera_official
    outputs = _run_engine(_engine_with(engine, "official"), decoded, masks, late=False)
    worst, mismatched = _report("official", outputs, logits)
    assert worst < TOL, f"max abs difference of low-res logits {worst}"
    assert mismatched == []


@slow_parity
def test_default_preprocessing_fails_the_parity_bound_on_camera_sized_frames(engine, camera_clip, camera_official):
    """The comparison above can fail: the default rule's different resize shows in the logits."""
    _, masks = camera_clip
    logits, decoded = camera_official
    outputs = _run_engine(_engine_with(engine, "device"), decoded, masks, late=False)
    worst, mismatched = _report("device", outputs, logits)
    assert worst > TOL, f"the default preprocessing went unnoticed (max diff {worst})"
