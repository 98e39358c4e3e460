"""Several cameras stepped together (`SegmentationEngine.step_many`): one batched encoder
call, the same results as stepping the cameras one at a time.

Real SAM2 (hiera_t, random weights, 128 px). Three streams with different clips, frame
sizes and targets are stepped batched on one set of streams and one by one on a twin set
of the same engine (same weights); every target's low-res logits (the state the next
frame's memory is made from) and masks are compared on every frame.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support.clips import moving_shapes
from refseg_ros.engine import (BoxPrompt, InvalidFrameError, MaskPrompt, SegmentationEngine, StepsFailed,
                               UnknownStreamError)
from refseg_ros.engine.features import encode_image, encode_images
from support.engines import SIZE, make_engine  # 128 px, objects kept present

FRAMES = 10  # past num_maskmem (7): the memory bank fills and rolls
TOL = 1e-4  # batched kernels may sum in another order; measured ~1e-6 on the CPU


def _bounding_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def _crop(frames, masks, h: int, w: int):
    return ([np.ascontiguousarray(f[:h, :w]) for f in frames], [{k: m[:h, :w] for k, m in ms.items()} for ms in masks])


@pytest.fixture(scope="module")
def clips():
    """Per camera: frames (different sizes: the model's, smaller, larger) and its targets."""
    a = moving_shapes(FRAMES, SIZE, seed=1)
    b = _crop(*moving_shapes(FRAMES, 128, seed=2), 96, 112)
    c = moving_shapes(FRAMES, 160, seed=3)
    return {
        "front": (a[0], [MaskPrompt(a[1][0][1]), MaskPrompt(a[1][0][2])]),
        "left": (b[0], [BoxPrompt(_bounding_box(b[1][0][3]))]),
        "rear": (c[0], [MaskPrompt(c[1][0][2]), MaskPrompt(c[1][0][3]), BoxPrompt(_bounding_box(c[1][0][1]))]),
    }


@pytest.fixture(scope="module")
def engine():
    return make_engine()


def add_cameras(engine: SegmentationEngine, clips, suffix: str) -> None:
    for camera, (_, prompts) in clips.items():
        engine.add_stream(camera + suffix)
        for k, prompt in enumerate(prompts, start=1):
            engine.add_target(camera + suffix, prompt, target_id=k)


def logits(result) -> dict[int, torch.Tensor]:
    return {t.target_id: t.low_res_logits for t in result.targets}


def compare(batched, single) -> tuple[float, int]:
    """Worst |logit difference| and the count of mask pixels that differ, over the targets."""
    worst, pixels = 0.0, 0
    assert [t.target_id for t in batched.targets] == [t.target_id for t in single.targets]
    for a, b in zip(batched.targets, single.targets):
        worst = max(worst, (a.low_res_logits - b.low_res_logits).abs().max().item())
        pixels += int((a.mask != b.mask).sum())
    return worst, pixels


def count_encoder_calls(engine, monkeypatch) -> list[int]:
    """The batch size T of every call the engine makes to its encoder backend."""
    sizes: list[int] = []
    encode = engine.encoder.encode

    def counted(images):
        sizes.append(images.shape[0])
        return encode(images)

    monkeypatch.setattr(engine.encoder, "encode", counted)
    return sizes


def test_batched_cameras_equal_cameras_stepped_one_by_one(engine, clips, monkeypatch):
    add_cameras(engine, clips, "-batched")
    add_cameras(engine, clips, "-single")
    engine.add_stream("idle-batched")  # no target: needs no encoder pass
    sizes = count_encoder_calls(engine, monkeypatch)
    worst, pixels = 0.0, 0
    for index in range(FRAMES):
        tick = [(camera + "-batched", frames[index], float(index)) for camera, (frames, _) in clips.items()]
        tick.insert(1, ("idle-batched", clips["left"][0][index], float(index)))
        batched = engine.step_many(tick)
        assert sizes[-1] == 3, "one encoder call for the three cameras with targets"
        assert [r.stream_id for r in batched] == [s for s, _, _ in tick]
        assert batched[1].targets == [] and batched[1].frame_index == index
        for result, (camera, (frames, _)) in zip([batched[0], *batched[2:]], clips.items()):
            single = engine.step(camera + "-single", frames[index], float(index))
            assert sizes[-1] == 1
            assert (result.frame_index, result.stamp) == (single.frame_index, single.stamp) == (index, float(index))
            assert result.targets[0].mask.shape == frames[index].shape[:2]
            assert [t.state for t in result.targets] == [t.state for t in single.targets]
            w, p = compare(result, single)
            worst, pixels = max(worst, w), pixels + p
    assert len(sizes) == FRAMES * 4
    print(f"batched vs one by one: max |logit diff| {worst:.2e}, mask pixels differing {pixels}")
    assert worst < TOL and pixels == 0
    # every target was decoded from its own camera's features (not an empty or absent mask)
    assert all(t.mask.any() for r in batched if r.targets for t in r.targets)


def test_swapped_features_are_caught(engine, clips, monkeypatch):
    """The comparison above can fail: two cameras' features swapped in the batch (a
    wrong index on the way back) give other logits."""
    add_cameras(engine, clips, "-swapped")
    add_cameras(engine, clips, "-reference")

    encode = engine.encoder.encode

    def swapped(images):
        features = encode(images)
        return [features[1], features[0], *features[2:]]

    # frame 0 as it should be (a mask prompt's frame outputs the mask itself), then frame 1 swapped
    engine.step_many([(camera + "-swapped", frames[0], 0.0) for camera, (frames, _) in clips.items()])
    single = [engine.step(camera + "-reference", frames[0]) for camera, (frames, _) in clips.items()]
    monkeypatch.setattr(engine.encoder, "encode", swapped)
    broken = engine.step_many([(camera + "-swapped", frames[1], 0.0) for camera, (frames, _) in clips.items()])
    monkeypatch.undo()
    single = [engine.step(camera + "-reference", frames[1]) for camera, (frames, _) in clips.items()]
    assert compare(broken[0], single[0])[0] > 100 * TOL
    assert compare(broken[1], single[1])[0] > 100 * TOL
    assert compare(broken[2], single[2])[0] < TOL


def test_batching_off_is_one_call_per_frame_and_bit_identical(engine, clips, monkeypatch):
    monkeypatch.setattr(engine.config, "batch_cameras", False)
    add_cameras(engine, clips, "-many")
    add_cameras(engine, clips, "-one")
    sizes = count_encoder_calls(engine, monkeypatch)
    for index in range(2):
        many = engine.step_many([(camera + "-many", frames[index], 0.0) for camera, (frames, _) in clips.items()])
        one = [engine.step(camera + "-one", frames[index]) for camera, (frames, _) in clips.items()]
        for a, b in zip(many, one):
            assert all(torch.equal(x.low_res_logits, y.low_res_logits) for x, y in zip(a.targets, b.targets))
    assert sizes == [1] * 12


def test_encode_images_of_one_is_encode_image(engine, clips):
    frames = [frames[0] for frames, _ in clips.values()]
    images = torch.cat([engine.preprocess(f) for f in frames])
    with torch.inference_mode():
        batch = encode_images(engine.model, images)
        for i, features in enumerate(batch):
            alone = encode_image(engine.model, images[i:i + 1])
            for x, y in zip(features.vision_feats + features.vision_pos + features.trunk,
                            alone.vision_feats + alone.vision_pos + alone.trunk):
                assert x.shape == y.shape and (x - y).abs().max() < 1e-4
    with pytest.raises(ValueError, match=r"\(T, 3, S, S\)"):
        encode_images(engine.model, images[0])


def test_bad_entries_change_nothing(engine, clips):
    frames, prompts = clips["front"]
    engine.add_stream("checked")
    engine.add_target("checked", prompts[0])
    before = engine.step("checked", frames[0]).frame_index
    with pytest.raises(UnknownStreamError, match="nowhere"):
        engine.step_many([("checked", frames[1], 0.0), ("nowhere", frames[1], 0.0)])
    engine.add_stream("checked-too")
    with pytest.raises(InvalidFrameError, match="stream 'checked': frame must be uint8"):
        engine.step_many([("checked-too", frames[1], 0.0), ("checked", frames[1].astype(np.float32), 0.0)])
    with pytest.raises(ValueError, match="given twice"):
        engine.step_many([("checked", frames[1], 0.0), ("checked", frames[2], 0.0)])
    assert engine.step("checked", frames[1]).frame_index == before + 1
    assert engine.step("checked-too", frames[1]).frame_index == 0
    assert engine.step_many([]) == []


class FailingProposer:
    gates_output = False

    def propose(self, *args):
        raise RuntimeError("proposer broke")

    def close(self) -> None:
        pass


def test_a_failing_stream_leaves_the_others_stepped(engine, clips):
    (frames, prompts), (other, other_prompts) = clips["front"], clips["rear"]
    engine.add_stream("fails")
    engine.add_stream("works")
    tid = engine.add_target("fails", prompts[0])
    engine.add_target("works", other_prompts[0])
    engine.step_many([("fails", frames[0], 0.0), ("works", other[0], 0.0)])  # the prompts are applied
    engine.set_proposer("fails", tid, FailingProposer())  # asked from the next frame on
    with pytest.raises(StepsFailed, match="1 of 2 streams failed: stream 'fails': RuntimeError: proposer broke") \
            as caught:
        engine.step_many([("fails", frames[1], 0.0), ("works", other[1], 0.0)])
    assert [r.stream_id for r in caught.value.results] == ["works"]
    assert isinstance(caught.value.failures["fails"], RuntimeError)
    assert engine.step("works", other[2]).frame_index == 2
    with pytest.raises(RuntimeError, match="proposer broke"):  # step raises the stage's own error
        engine.step("fails", frames[1])
