"""Acquisition of reference targets (refseg_ros.adapters.reference.prior: reference_prior, peaks,
candidates, gate, acquisition; its background worker: test_latest_worker.py).

Hand-made feature maps check the prototype arithmetic and the raw-score gate; a tiny
DINOv2 (built from a config, saved and loaded back) and a small SAM2 (sam2_hiera_t at
512, random weights, the object head told to say "present") check the real paths: the
batched candidate decode equals the engine's single-click decode row by row, and the
fast phase never runs the image encoder. No fixtures or downloads needed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refseg_ros.adapters.reference.prior import candidates as candidates_module
from refseg_ros.adapters.reference.prior.acquisition import (Acquirer, AcquirerConfig, Proposal,
                                                        encode_acquisition_memory)
from refseg_ros.adapters.reference.prior.candidates import (Candidates, ScoringRules, decode_candidates,
                                                      score_candidates, single_click_multimask)
from refseg_ros.adapters.reference.prior.dino_encoder import DinoEncoder, load_dinov2
from refseg_ros.adapters.reference.prior.gate import AbsenceGate, AcquisitionGate
from refseg_ros.adapters.reference.prior.peaks import Peak, find_peaks, grid_to_frame
from refseg_ros.adapters.reference.prototypes import min_max
from refseg_ros.adapters.reference.prior.reference_prior import (ReferencePrototypes, mask_to_grid, prior_maps,
                                                           prototypes_from_examples, prototypes_from_features,
                                                           similarity_map)
from refseg_ros.engine import heads
from refseg_ros.engine.features import encode_image
from refseg_ros.engine.frames import FramePreprocessor
from refseg_ros.engine.prompts import to_model_inputs
from refseg_ros.engine.types import PointsPrompt
from support.tiny_models import present_sam

PATCH = 14
DINO_SIZE = 112  # an 8 x 8 grid


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          patch_size=PATCH, image_size=DINO_SIZE)
    model = Dinov2Model(config).eval()
    folder = tmp_path_factory.mktemp("dinov2_tiny")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def encoder(dino_folder):
    return DinoEncoder(dino_folder[0])


@pytest.fixture(scope="module")
def sam():
    return present_sam("sam2_hiera_t", 512).requires_grad_(False)


def _scene(row: int, col: int, seed: int, size: int = DINO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A grey noise image with a red 2 x 2-patch block at patch (row, col), and its mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, size=(size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    mask[row * PATCH:(row + 2) * PATCH, col * PATCH:(col + 2) * PATCH] = True
    image[mask] = (220, 30, 30)
    return image, mask


@pytest.fixture(scope="module")
def frame_features(sam):
    frame, _ = _scene(5, 4, seed=7)
    pad = np.random.default_rng(8).integers(90, 140, size=(DINO_SIZE, 48, 3), dtype=np.uint8)
    frame = np.concatenate([frame, pad], axis=1)  # 160 x 112: not square, so x and y differ
    with torch.inference_mode():
        features = encode_image(sam, FramePreprocessor(512, torch.device("cpu"))(frame))
    return frame, features


# ------------------------------------------------------------------ prototype arithmetic
def test_mask_reaches_the_grid_as_cell_coverage():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:4, :4] = True  # the top-left cell of a 2 x 2 grid
    mask[6, 6] = True  # one pixel of the bottom-right cell (16 pixels)
    grid = mask_to_grid(mask, (2, 2))
    assert grid.shape == (1, 1, 2, 2)
    assert torch.allclose(grid[0, 0], torch.tensor([[1.0, 0.0], [0.0, 1 / 16]]))


def test_masked_average_pooling_gives_foreground_and_background_prototypes():
    # example 0: cells under the mask hold (1, 0, 0) and (3, 0, 0); the rest (0, 2, 0)
    # example 1: the mask covers all but a quarter cell: too little for a background prototype
    features = torch.zeros(2, 3, 2, 2)
    features[0, :, 0, 0] = torch.tensor([1.0, 0, 0])
    features[0, :, 0, 1] = torch.tensor([3.0, 0, 0])
    features[0, :, 1, :] = torch.tensor([0.0, 2, 0])[:, None]
    features[1] = torch.tensor([0.0, 0, 4])[:, None, None]
    features[1, :, 1, 1] = torch.tensor([0.0, 4, 0])
    weights = torch.zeros(2, 1, 2, 2)
    weights[0, 0, 0, :] = 1.0
    weights[1, 0] = torch.tensor([[1.0, 1.0], [1.0, 0.75]])
    protos = prototypes_from_features(features, weights)
    eps = 5e-4  # FSSAM's area offset: sum(f m) / (sum(m) + eps)
    assert protos.foreground.shape == (2, 3) and protos.background.shape == (1, 3)
    assert torch.allclose(protos.foreground[0], torch.tensor([4.0, 0, 0]) / (2 + eps), atol=1e-6)
    assert torch.allclose(protos.foreground[1], torch.tensor([0.0, 3.0, 12.0]) / (3.75 + eps), atol=1e-6)
    assert torch.allclose(protos.background[0], torch.tensor([0.0, 4, 0]) / (2 + eps), atol=1e-6)
    with pytest.raises(ValueError, match="empty mask"):
        prototypes_from_features(features, torch.zeros(2, 1, 2, 2))


def test_prototypes_store_as_numpy_arrays_and_come_back(tmp_path):
    protos = ReferencePrototypes(torch.randn(2, 5), torch.randn(1, 5))
    np.savez(tmp_path / "p.npz", **protos.to_arrays())
    back = ReferencePrototypes.from_arrays(np.load(tmp_path / "p.npz"))
    assert torch.equal(back.foreground, protos.foreground)
    assert torch.equal(back.background, protos.background)
    assert back.foreground.dtype == torch.float32
    none = ReferencePrototypes(torch.randn(1, 5), torch.zeros(0, 5))
    assert ReferencePrototypes.from_arrays(none.to_arrays()).background.shape == (0, 5)
    with pytest.raises(ValueError):
        ReferencePrototypes.from_arrays({"foreground": np.ones((2, 5)), "background": np.ones((1, 4))})


# -------------------------------------------------------------- raw maps, peaks and the gate
def test_raw_cosine_map_peaks_where_the_prototype_recurs():
    torch.manual_seed(1)
    features = torch.randn(1, 16, 6, 7)
    target = features[0, :, 4, 2].clone()
    protos = ReferencePrototypes(target[None] * 3.0, torch.zeros(0, 16))  # scale: cosine ignores it
    maps = prior_maps(features, protos)
    assert maps.background is None
    assert float(maps.foreground[4, 2]) == pytest.approx(1.0, abs=1e-6)
    peaks = find_peaks(maps.foreground, k=3, min_distance=1)
    assert (peaks[0].row, peaks[0].col) == (4, 2)
    assert peaks[0].score == pytest.approx(1.0, abs=1e-6)
    assert [p.score for p in peaks] == sorted((p.score for p in peaks), reverse=True)
    # cell (4, 2) of a 6 x 7 grid on a 60 x 70 frame: centre x = 25, y = 45
    assert grid_to_frame(peaks[:1], (6, 7), (60, 70)).tolist() == [[25.0, 45.0]]


def test_peaks_are_separated_local_maxima():
    sim = torch.zeros(9, 9)
    sim[2, 2], sim[2, 3] = 0.9, 0.9  # a plateau: one peak
    sim[2, 4] = 0.8  # beside it: not a local maximum
    sim[7, 7] = 0.5
    sim[0, 8] = float("-inf")  # excluded cells never peak
    peaks = find_peaks(sim, k=5, min_distance=2, min_score=0.1)
    assert [(p.row, p.col) for p in peaks] == [(2, 2), (7, 7)]
    assert find_peaks(sim, k=1, min_distance=2) == [Peak(pytest.approx(0.9), 2, 2)]
    with pytest.raises(ValueError):
        find_peaks(sim, k=0, min_distance=1)


def _mask_candidates(masks: torch.Tensor, points_xy, iou=0.9, logit=5.0) -> Candidates:
    """Hand-made candidates: (k, S/4, S/4) bool masks as logits +-10."""
    k = masks.shape[0]
    low_res = torch.where(masks, 10.0, -10.0)[:, None].float()
    return Candidates(np.asarray(points_xy, dtype=np.float32), low_res, torch.full((k,), iou),
                      torch.full((k,), logit), torch.zeros(k, 8))


def test_no_match_gives_no_acceptance_though_min_max_would():
    """A frame without the target: raw cosines all low. Min-max normalisation would turn
    its least dissimilar patch into a perfect 1.0 peak and the gate would accept it; the
    raw score stays low and nothing is accepted, frame after frame."""
    threshold = 0.5
    sim = torch.full((8, 8), 0.05)
    sim[3, 5] = 0.2  # the least dissimilar patch
    normalised = min_max(sim.flatten()).view(8, 8)
    assert float(normalised.max()) == pytest.approx(1.0, abs=1e-5)
    # the peak is found either way; only its raw value says "not the target"
    raw_peaks = find_peaks(sim, k=1, min_distance=1)
    assert (raw_peaks[0].row, raw_peaks[0].col) == (3, 5) and raw_peaks[0].score == pytest.approx(0.2)
    assert find_peaks(sim, k=1, min_distance=1, min_score=threshold) == []
    assert find_peaks(normalised, k=1, min_distance=1, min_score=threshold) != []
    # a candidate mask on that patch (frame 64 x 64, low-res 16 x 16: cell (3, 5) = rows 6..7, cols 10..11)
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 6:8, 10:12] = True
    cand = _mask_candidates(mask, [[44.0, 28.0]], iou=1.0, logit=20.0)
    raw = score_candidates(cand, sim, (64, 64))[0]
    minmaxed = score_candidates(cand, normalised, (64, 64))[0]
    assert raw.valid and minmaxed.valid
    assert raw.score == pytest.approx(0.2, abs=1e-4)
    assert minmaxed.score == pytest.approx(1.0, abs=1e-4)
    raw_gate, minmax_gate = AcquisitionGate(threshold, 2, 3), AcquisitionGate(threshold, 2, 3)
    raw_says = [raw_gate.update(raw.score) for _ in range(6)]
    minmax_says = [minmax_gate.update(minmaxed.score) for _ in range(6)]
    assert not any(raw_says)
    assert any(minmax_says)


@pytest.mark.parametrize("m, k, scores, expected", [
    # threshold 0.5 throughout; None = nothing found on that frame
    (2, 3, [0.6, None, 0.6], [False, False, True]),
    (2, 3, [0.6, None, None, 0.6], [False, False, False, False]),  # first hit fell out of the window
    (2, 3, [0.6, 0.6, 0.6, 0.6], [False, True, False, True]),  # the window restarts on acceptance
    (2, 3, [0.6, 0.5 - 1e-9, 0.5], [False, False, True]),  # at the threshold counts, below does not
    (2, 3, [0.6, 0.6, None], [False, True, False]),
    (2, 3, [None, 0.6, 0.6, 0.4, 0.6], [False, False, True, False, False]),  # 1 hit since the reset
    (2, 3, [0.6, None, float("nan"), 0.6], [False, False, False, False]),  # nan is no hit
    (2, 3, [0.6, None, 0.4], [False, False, False]),
    (1, 1, [0.2, 0.7, 0.7, None], [False, True, True, False]),
    (3, 3, [0.9, 0.9, None, 0.9, 0.9, 0.9], [False, False, False, False, False, True]),
    (3, 5, [0.9, None, 0.9, None, 0.9], [False, False, False, False, True]),
])
def test_gate_m_of_k(m, k, scores, expected):
    gate = AcquisitionGate(0.5, m, k)
    assert [gate.update(s) for s in scores] == expected


def test_gate_settings_are_checked_and_reset_forgets():
    for m, k in ((0, 3), (4, 3)):
        with pytest.raises(ValueError):
            AcquisitionGate(0.5, m, k)
    with pytest.raises(ValueError):
        AcquisitionGate(float("nan"), 1, 1)
    gate = AcquisitionGate(0.5, 2, 3)
    gate.update(0.9)
    assert gate.hits == 1 and gate.window == (True,)
    gate.reset()
    assert gate.update(0.9) is False


@pytest.mark.parametrize("best, expected", [
    ([0.9, 0.2, None], [False, False, True]),  # two misses of three: gone
    ([0.2, 0.9, 0.2, 0.9, 0.2], [False, False, True, False, False]),  # the window empties when it fires
    ([0.5, float("nan"), None], [False, False, True]),  # at the threshold: seen; nan: a miss
])
def test_absence_gate_fires_on_m_misses_of_k(best, expected):
    gate = AbsenceGate(0.5, 2, 3)
    assert [gate.update(b) for b in best] == expected
    with pytest.raises(ValueError):
        AbsenceGate(0.5, 3, 2)


# -------------------------------------------------------------------------- refusals
def test_empty_full_frame_absent_and_complement_masks_are_refused():
    sim = torch.full((8, 8), 0.9)
    s = 16
    full = torch.ones(s, s, dtype=torch.bool)
    empty = torch.zeros(s, s, dtype=torch.bool)
    object_ = torch.zeros(s, s, dtype=torch.bool)
    object_[2:12, 2:12] = True  # 39 % of the frame; its complement 61 %
    complement = ~object_
    masks = torch.stack([full, empty, object_, object_, complement])
    points = [[28.0, 28.0]] * 5  # frame 64 x 64: low-res cell (7, 7), inside the object
    cand = _mask_candidates(masks, points)
    cand.object_score_logits[3] = -2.0  # SAM2 says absent
    verdicts = score_candidates(cand, sim, (64, 64))
    assert [v.refused for v in verdicts] == ["full frame", "empty", None, "absent", "point outside"]
    assert verdicts[2].score == pytest.approx(0.9 * 0.9 ** 0.5 * torch.sigmoid(torch.tensor(5.0)).item() ** 0.5,
                                              abs=1e-5)
    assert np.isnan(verdicts[1].score)
    # the area rules move with their settings
    loose = ScoringRules(max_area_fraction=1.0, require_point_inside=False)
    assert [v.refused for v in score_candidates(cand, sim, (64, 64), loose)] == [None, "empty", None, "absent", None]
    tiny = torch.zeros(1, s, s, dtype=torch.bool)
    tiny[0, 7, 7] = True  # 1 of 256 cells = 0.39 %
    assert score_candidates(_mask_candidates(tiny, [[28.0, 28.0]]), sim, (64, 64),
                            ScoringRules(min_area_fraction=0.01))[0].refused == "empty"


def test_acquirer_never_accepts_a_refused_candidate(monkeypatch, sam, frame_features):
    frame, features = frame_features
    protos = ReferencePrototypes(torch.ones(1, 32), torch.zeros(0, 32))
    acquirer = Acquirer(_HandMadeEncoder(torch.ones(1, 32, 8, 8)), protos,
                        AcquirerConfig(candidates=2, threshold=-1.0, m=1, window=1))
    proposal = acquirer.propose(frame)
    s = sam.image_size // 4
    full = torch.ones(2, s, s, dtype=torch.bool)
    monkeypatch.setattr("refseg_ros.adapters.reference.prior.acquisition.decode_candidates",
                        lambda *a, **k: _mask_candidates(full[:len(proposal.points_xy)], proposal.points_xy))
    decision = acquirer.evaluate(sam, features, proposal, frame.shape[:2])
    assert decision.verdicts and all(v.refused == "full frame" for v in decision.verdicts)
    assert decision.acquisition is None and acquirer.decide(sam, features, proposal, frame.shape[:2]) is None


class _HandMadeEncoder(DinoEncoder):
    """A DinoEncoder whose features are given: (1, C, h, w) for any frame."""

    def __init__(self, features: torch.Tensor):
        self.features = features
        self.device = torch.device("cpu")
        self.input_size = features.shape[-1] * PATCH
        self.patch_size = PATCH

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.features


# --------------------------------------------------------------------- the batched decode
def test_one_batched_decode_equals_single_click_decodes(monkeypatch, sam, frame_features):
    frame, features = frame_features
    height, width = frame.shape[:2]
    points = np.array([[10.5, 20.5], [70.0, 63.0], [100.0, 5.0], [56.0, 100.0]], dtype=np.float32)
    calls = []
    real_decode = heads.decode

    def counting(model, pix_feat, *args, **kwargs):
        calls.append(pix_feat.shape[0])
        return real_decode(model, pix_feat, *args, **kwargs)

    monkeypatch.setattr(heads, "decode", counting)
    with torch.inference_mode():
        batched = decode_candidates(sam, features, points, (height, width))
    assert calls == [len(points)]  # one call, batch k
    monkeypatch.setattr(heads, "decode", real_decode)
    s = sam.image_size // 4
    assert batched.low_res.shape == (4, 1, s, s) and batched.low_res.dtype == torch.float32
    assert batched.iou.shape == (4,) and batched.object_score_logits.shape == (4,)
    multimask = single_click_multimask(sam)
    assert multimask  # SAM2's rule for one click: three masks, best IoU kept
    for i, point in enumerate(points):
        # the engine's own path for a user's click (SegmentationEngine._decode_prompt)
        inputs = to_model_inputs(PointsPrompt(point[None], np.array([1])), height, width, sam.image_size,
                                 torch.device("cpu"))
        with torch.inference_mode():
            single = heads.decode(sam, heads.without_memory(sam, features, 1), features.high_res(1),
                                  points=inputs.points, multimask=multimask)
        assert float((batched.low_res[i:i + 1] - single.low_res_masks).abs().max()) <= 1e-5
        assert float((batched.iou[i] - single.ious.max()).abs()) <= 1e-5
        assert float((batched.object_score_logits[i] - single.object_score_logits.flatten()[0]).abs()) <= 1e-5
        assert float((batched.obj_ptr[i:i + 1] - single.obj_ptr).abs().max()) <= 1e-5
    # the rows are different masks: a batch that repeated one click would fail above
    assert float((batched.low_res[0] - batched.low_res[1]).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="outside"):
        decode_candidates(sam, features, np.array([[width + 1.0, 0.0]]), (height, width))


# -------------------------------------------------------------- tiny DINOv2, end to end
def test_tiny_dinov2_loads_from_its_folder_with_the_same_features(dino_folder, encoder):
    folder, model = dino_folder
    assert encoder.grid_size == (8, 8) and encoder.channels == 32 and encoder.input_size == DINO_SIZE
    image, _ = _scene(1, 1, seed=0, size=90)  # resized to 112
    in_memory = DinoEncoder(model)(image)
    assert in_memory.shape == (1, 32, 8, 8)
    assert torch.equal(encoder(image), in_memory)
    with pytest.raises(FileNotFoundError):
        load_dinov2(folder / "missing")
    with pytest.raises(TypeError):
        load_dinov2(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="multiple"):
        DinoEncoder(model, input_size=100)


def test_prior_finds_the_taught_object_in_a_new_frame(encoder):
    image, mask = _scene(1, 1, seed=0)
    frame, where = _scene(5, 4, seed=1)  # the object elsewhere, on other noise
    protos = prototypes_from_examples(encoder, [image], [mask])
    assert protos.foreground.shape == (1, 32) and protos.background.shape == (1, 32)
    sim = similarity_map(encoder, frame, protos)
    assert sim.shape == (8, 8) and sim.dtype == torch.float32
    acquirer = Acquirer(encoder, protos, AcquirerConfig(candidates=3, min_distance=2))
    proposal = acquirer.propose(frame, stamp=12.5)
    assert proposal.stamp == 12.5 and proposal.seconds > 0 and proposal.frame_hw == (DINO_SIZE, DINO_SIZE)
    assert torch.equal(proposal.foreground, sim)
    best = proposal.peaks[0]
    assert (best.row, best.col) in {(5, 4), (5, 5), (6, 4), (6, 5)}
    x, y = proposal.points_xy[0]
    assert where[int(y), int(x)]
    # raw: the object's cells are near 1, every other cell far below
    assert best.score > 0.9 and float(sim[~torch.as_tensor(mask_to_grid(where, (8, 8))[0, 0] > 0)].max()) < 0.5
    with pytest.raises(ValueError, match="empty"):
        prototypes_from_examples(encoder, [image], [np.zeros_like(mask)])


def test_decide_uses_the_frames_features_and_returns_a_pinnable_mask(sam, frame_features, encoder):
    frame, features = frame_features
    image, mask = _scene(1, 1, seed=0)
    config = AcquirerConfig(candidates=2, threshold=-1.0, m=1, window=1,
                            rules=ScoringRules(max_area_fraction=1.0, require_point_inside=False))
    acquirer = Acquirer.from_examples(encoder, [image], [mask], config)
    proposal = acquirer.propose(frame, stamp=3.0)
    assert len(proposal.points_xy) >= 1

    def no_encoder(*args, **kwargs):
        raise AssertionError("the fast phase ran the image encoder")

    trunk = sam.image_encoder.trunk  # what engine.features.encode_image runs first
    saved = trunk.forward
    trunk.forward = no_encoder
    try:
        decision = acquirer.evaluate(sam, features, proposal, frame.shape[:2])
    finally:
        trunk.forward = saved
    assert decision.accepted, [v for v in decision.verdicts]
    found = decision.acquisition
    s = sam.image_size // 4
    assert found.low_res_logits.shape == (1, 1, s, s) and found.obj_ptr.shape == (1, sam.hidden_dim)
    assert found.object_score_logits.shape == (1, 1) and found.proposal_stamp == 3.0
    assert found.mask.shape == frame.shape[:2] and found.mask.dtype == bool
    expected = F.interpolate(found.low_res_logits, size=frame.shape[:2], mode="bilinear", align_corners=False)[0, 0] > 0
    assert np.array_equal(found.mask, expected.numpy())
    assert found.score == decision.best.score == max(v.score for v in decision.verdicts)
    # its memory is what the engine pins for a user's click at that point on this frame
    inputs = to_model_inputs(PointsPrompt(found.point_xy[None], np.array([1])), *frame.shape[:2],
                             sam.image_size, torch.device("cpu"))
    with torch.inference_mode():
        single = heads.decode(sam, heads.without_memory(sam, features, 1), features.high_res(1),
                              points=inputs.points, multimask=single_click_multimask(sam))
        high = F.interpolate(single.low_res_masks, size=(sam.image_size,) * 2, mode="bilinear",
                             align_corners=False)
        clicked, clicked_pos = heads.encode_memory(sam, features, high, single.object_score_logits, from_prompt=True)
        pinned, pinned_pos = encode_acquisition_memory(sam, features, found)
    assert float((found.obj_ptr - single.obj_ptr).abs().max()) <= 1e-5
    assert torch.equal(pinned_pos, clicked_pos)
    bf16_step = clicked.float().abs() * 2.0 ** -7 + 1e-6  # bf16 memories: at most one rounding step apart
    assert bool(((pinned.float() - clicked.float()).abs() <= bf16_step).all())
    # the same proposal with an area bound below its masks' areas: every mask refused, nothing accepted
    smallest = min(v.area_fraction for v in decision.verdicts)
    strict = Acquirer(encoder, acquirer.prototypes, AcquirerConfig(
        candidates=2, threshold=-1.0, m=1, window=1,
        rules=ScoringRules(max_area_fraction=smallest / 2, min_area_fraction=0.0, require_point_inside=False)))
    refused = strict.evaluate(sam, features, proposal, frame.shape[:2])
    assert refused.acquisition is None and {v.refused for v in refused.verdicts} == {"full frame"}
    # a frame of another size: clicks are scaled to it
    big = np.zeros((224, 320, 3), dtype=np.uint8)  # twice the frame each way
    with torch.inference_mode():
        big_features = encode_image(sam, FramePreprocessor(512, torch.device("cpu"))(big))
    seen = {}
    real = candidates_module.decode_candidates

    def spy(model, feats, points, frame_hw, *args, **kwargs):
        seen["points"], seen["hw"] = points, frame_hw
        return real(model, feats, points, frame_hw, *args, **kwargs)

    import refseg_ros.adapters.reference.prior.acquisition as acquisition_module
    acquisition_module.decode_candidates, saved_decode = spy, acquisition_module.decode_candidates
    try:
        acquirer.evaluate(sam, big_features, proposal, (224, 320))
    finally:
        acquisition_module.decode_candidates = saved_decode
    assert seen["hw"] == (224, 320) and np.allclose(seen["points"], proposal.points_xy * 2)


def test_nothing_proposed_counts_as_a_miss():
    protos = ReferencePrototypes(torch.ones(1, 4), torch.ones(1, 4))
    acquirer = Acquirer(_HandMadeEncoder(torch.ones(1, 4, 8, 8)), protos, AcquirerConfig(m=1, window=1))
    frame = np.zeros((16, 16, 3), dtype=np.uint8)
    proposal = acquirer.propose(frame)
    assert len(proposal.points_xy) == 0  # foreground = background everywhere: no candidate
    assert acquirer.decide(None, None, proposal, (16, 16)) is None  # no decode needed
    assert acquirer.gate.window == (False,)


def test_presence_looks_around_the_tracked_box_only():
    """The watch's look: a hand-made 8 x 8 map over a 160 x 160 frame (20 px cells), one
    cell that looks like the examples (row 2, column 6: pixels x 120-139, y 40-59)."""
    protos = ReferencePrototypes(torch.ones(1, 4), torch.ones(1, 4))
    acquirer = Acquirer(_HandMadeEncoder(torch.ones(1, 4, 8, 8)), protos, AcquirerConfig())
    fg, bg = torch.zeros(8, 8), torch.full((8, 8), 0.2)
    fg[2, 6] = 0.9
    proposal = Proposal(np.zeros((0, 2), np.float32), [], fg, bg, (160, 160))
    hw = (160, 160)
    assert acquirer.presence(proposal, (120, 40, 140, 60), hw) == pytest.approx(0.9)  # on it
    assert acquirer.presence(proposal, (90, 40, 110, 60), hw) == pytest.approx(0.9)  # widened onto it
    assert acquirer.presence(proposal, (0, 100, 40, 160), hw) is None  # elsewhere: only cells like the background
    assert acquirer.presence(proposal, None, hw) is None  # an empty mask shows nothing like it
    fg[5, 0] = 0.3  # like the foreground more than the background, below the threshold
    assert acquirer.presence(proposal, (0, 100, 40, 160), hw) == pytest.approx(0.3)
