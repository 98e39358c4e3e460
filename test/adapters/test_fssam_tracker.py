"""FSSAM as a per-target tracker in the engine (`adapters.reference.fssam.tracker`).

Small random networks, no fixtures: sam2_hiera_t at 512 (FSSAM runs SAM2 at 512) with
the object-score head biased to "present", and a DINOv2 of width 32 and one layer at
FSSAM's 560 px input (40 x 40 patches). Two supports, the paper's calibration (the
multi-shot path). The stages themselves are pinned to the official code by
test_fssam_parity.py; here the tracker is pinned to `FssamSegmenter.segment`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refseg_ros.adapters.reference.fssam import FssamOptions, FssamSegmenter
from refseg_ros.adapters.reference.dino import build_dinov2
from refseg_ros.adapters.reference.fssam.tracker import FssamTracker
from refseg_ros.adapters.reference.fssam.priors import priors_from_prototypes, pseudo_prompt_priors
from refseg_ros.adapters.reference.prototypes import masked_average
from refseg_ros.engine import EngineConfig, MaskPrompt, SegmentationEngine, TargetState
from refseg_ros.engine.features import encode_image
from refseg_ros.engine.seams import PlainFrame
from support.tiny_models import present_sam

FRAMES = 3  # stepped with the FSSAM target
COMPARED_PLAIN = 2  # frames of the plain target compared with and without it
COMPARED_FSSAM = (0, 2)  # frames compared with FssamSegmenter.segment
TOLERANCE = 1e-5


class Counter:
    """Wraps a module's forward and counts calls and the batch sizes it saw."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[int] = []
        original = module.forward

        def forward(*args, **kwargs):
            first = args[0] if args else next(iter(kwargs.values()))
            self.calls.append(int(first.shape[0]))
            return original(*args, **kwargs)

        module.forward = forward


def _supports(rng):
    images, labels = [], []
    for height, width in ((300, 400), (256, 320)):
        images.append(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
        label = np.zeros((height, width), np.uint8)
        label[height // 4:3 * height // 4, width // 3:2 * width // 3] = 1
        label[:8] = 255  # an ignored band counts as background
        labels.append(label)
    return images, labels


@pytest.fixture(scope="module")
def parts():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(0)
    sam = present_sam("sam2_hiera_t", 512)
    dino = build_dinov2(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2)
    rng = np.random.default_rng(3)
    supports, labels = _supports(rng)
    frames = rng.integers(0, 256, size=(FRAMES, 512, 512, 3), dtype=np.uint8)
    frames[:, 128:384, 160:352] = supports[0][40:296, 100:292]  # the object's pixels in view
    return sam, dino, supports, labels, frames


def _engine(sam) -> SegmentationEngine:
    engine = SegmentationEngine(sam, EngineConfig(model="sam2_hiera_t", image_size=512, device="cpu"),
                                random_weights=True)
    engine.add_stream("cam")
    return engine


@pytest.fixture(scope="module")
def runs(parts):
    """Two engines on the same frames: a plain reference target alone, and the same
    target beside an FSSAM target; calls of DINOv2, SAM2's image encoder and its memory
    encoder counted per phase in the second."""
    sam, dino, supports, labels, frames = parts
    plain = _engine(sam)
    plain.add_target("cam", MaskPrompt(labels[0] == 1), label="plain", image=supports[0])
    alone = [plain.step("cam", f) for f in frames[:COMPARED_PLAIN]]

    dino_calls, image_calls, memory_calls = Counter(dino), Counter(sam.image_encoder.trunk), Counter(sam.memory_encoder)
    engine = _engine(sam)
    engine.add_target("cam", MaskPrompt(labels[0] == 1), label="plain", image=supports[0])
    before = (len(dino_calls.calls), len(image_calls.calls), len(memory_calls.calls))
    tracker = FssamTracker(sam, dino, supports, labels)
    built = (list(dino_calls.calls[before[0]:]), len(image_calls.calls) - before[1],
             len(memory_calls.calls) - before[2])
    fssam_id = engine.add_tracked_target("cam", tracker, label="fssam")
    per_step = []
    steps = []
    for f in frames:
        marks = (len(dino_calls.calls), len(image_calls.calls), len(memory_calls.calls))
        steps.append(engine.step("cam", f))
        per_step.append((list(dino_calls.calls[marks[0]:]), len(image_calls.calls) - marks[1],
                         len(memory_calls.calls) - marks[2]))
    del dino.forward, sam.image_encoder.trunk.forward, sam.memory_encoder.forward  # back to the class's
    return dict(alone=alone, steps=steps, tracker=tracker, fssam_id=fssam_id, built=built, per_step=per_step,
                engine=engine)


def _result(step, target_id):
    return next(t for t in step.targets if t.target_id == target_id)


def test_tracker_equals_the_segmenter_on_every_frame(parts, runs):
    """Through the engine, per frame: low-res logits, frame-size mask and score equal
    FssamSegmenter.segment on the same frame (512 x 512: the engine's plain pass is
    FSSAM's SAM2 input)."""
    sam, dino, supports, labels, frames = parts
    segmenter = FssamSegmenter(sam, dino)
    for i in COMPARED_FSSAM:
        frame = frames[i]
        out = segmenter.segment(frame, supports, labels)
        ours = _result(runs["steps"][i], runs["fssam_id"])
        diff = float((ours.low_res_logits - out.low_res_logits).abs().max())
        print(f"[fssam tracker] frame {i}: max |low-res logit diff| {diff:.2e}")
        assert diff <= TOLERANCE, (i, diff)
        assert np.array_equal(ours.mask, out.mask), i
        assert 0 < ours.mask.sum() < ours.mask.size, i  # a mask to compare, not all or nothing
        assert ours.score == pytest.approx(float(torch.sigmoid(out.object_score_logits)), abs=1e-6)
        assert ours.state == TargetState.TRACKED  # the state machine runs on FSSAM's score


def test_support_work_is_done_once(parts, runs):
    """DINOv2 sees the 2 supports in one batch at construction, SAM2 encodes each support
    image (Hiera trunk) and memory once; every step then runs DINOv2 on the frame alone,
    one trunk pass (the engine's, shared) and FSSAM's two query memories (query-FG,
    query-Disc), plus the plain target's one memory write."""
    assert runs["built"] == ([2], 2, 2)
    for i, (dino_batches, image_passes, memory_passes) in enumerate(runs["per_step"]):
        assert dino_batches == [1], i
        assert image_passes == 1, i  # no second SAM2 pass for FSSAM
        assert memory_passes == 2 + 1, i
    assert runs["tracker"].nbytes() > 0
    assert runs["engine"].retained_bytes() == sum(  # FSSAM writes no engine memory
        t.memory.nbytes() for t in runs["engine"]._streams["cam"].targets.values() if t.label == "plain")


def test_plain_target_is_untouched_by_the_fssam_target(runs):
    """The plain reference target gives bit-identical results with and without the
    FSSAM target on its stream."""
    for i, (alone, beside) in enumerate(zip(runs["alone"], runs["steps"])):
        a, b = _result(alone, 1), _result(beside, 1)
        assert a.label == b.label == "plain"
        assert torch.equal(a.low_res_logits, b.low_res_logits), i
        assert np.array_equal(a.mask, b.mask) and a.score == b.score and a.state == b.state, i


def test_own_pass_equals_the_segmenter_on_any_frame_size(parts, runs):
    """query_features='own' is FSSAM's own SAM2 input (bilinear resize): equal to the
    segmenter on a 240 x 320 frame (1 shot), where the engine's shared pass (bicubic,
    antialiased) is not."""
    sam, dino, supports, labels, frames = parts
    frame = np.ascontiguousarray(frames[0][100:340, 96:416])
    segmenter = FssamSegmenter(sam, dino, FssamOptions.official())
    out = segmenter.segment(frame, supports[:1], labels[:1])
    own = FssamTracker.from_segmenter(segmenter, supports[:1], labels[:1], query_features="own")
    assert own.options == FssamOptions.official()
    ours = own.query(frame)
    assert float((ours.low_res_logits - out.low_res_logits).abs().max()) <= TOLERANCE
    assert np.array_equal(ours.mask, out.mask)
    engine = _engine(sam)
    with torch.no_grad():
        shared_features = encode_image(sam, engine.preprocess(frame))
    shared = own.query(frame, shared_features)
    print(f"[fssam tracker] 240x320, shared vs own pass: max |low-res logit diff| "
          f"{float((shared.low_res_logits - out.low_res_logits).abs().max()):.3f}")
    assert float((shared.low_res_logits - out.low_res_logits).abs().max()) > TOLERANCE


def test_prototype_priors_equal_the_generator(parts):
    """Priors from stored prototypes are bit-identical to pseudo_prompt_priors on the
    support features (2 shots, with and without the background prototype)."""
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(1, 24, 40, 40, generator=generator)
    supports = torch.randn(2, 24, 40, 40, generator=generator)
    masks = torch.zeros(2, 1, 512, 512)
    masks[0, :, 100:300, 50:200] = 1
    masks[1, :, 0:120, 300:512] = 1
    grid = supports.shape[-2:]
    small = [torch.nn.functional.interpolate(masks[s:s + 1], size=grid, mode="bilinear", align_corners=True)
             for s in range(2)]
    fg = [masked_average(supports[s:s + 1], small[s]) for s in range(2)]
    bg = [masked_average(supports[s:s + 1], 1 - small[s]) for s in range(2)]
    for background in (True, False):
        want = pseudo_prompt_priors(query, supports, masks, (512, 512), background_prototype=background)
        got = priors_from_prototypes(query, fg, bg if background else None, (512, 512))
        assert torch.equal(got.fg, want.fg) and torch.equal(got.disc, want.disc), background
        assert torch.equal(got.per_shot, want.per_shot), background


def test_refusals(parts, runs):
    """Bad supports and the wrong engine model are refused, with the reason."""
    sam, dino, supports, labels, frames = parts
    with pytest.raises(ValueError, match="2 support images for 1 labels"):
        FssamTracker(sam, dino, supports, labels[:1])
    with pytest.raises(ValueError, match="label values"):
        FssamTracker(sam, dino, supports[:1], [labels[0] * 2])
    with pytest.raises(ValueError, match="no object pixel"):
        FssamTracker(sam, dino, supports[:1], [np.zeros_like(labels[0])])
    with pytest.raises(ValueError, match="uint8"):
        FssamTracker(sam, dino, [supports[0].astype(np.float32)], labels[:1])
    with pytest.raises(ValueError, match="query_features"):
        FssamTracker(sam, dino, supports, labels, query_features="both")
    tracker = runs["tracker"]
    plain = PlainFrame(features=None, frame=frames[0])
    with pytest.raises(ValueError, match="FSSAM's SAM2"):
        tracker.track(torch.nn.Linear(1, 1), plain, None, 0, (512, 512))
    with pytest.raises(TypeError, match="PlainFrame"):
        tracker.track(sam, frames[0], None, 0, (512, 512))
    assert FssamTracker.variant_key is None
    assert tracker.options == FssamOptions()
