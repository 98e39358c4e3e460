"""Grounding fallback (refseg_ros.adapters.grounding) on tiny random-weight detectors.

Each detector is built from a small config (Grounding DINO and MM-Grounding-DINO with a
tiny Swin backbone and a tiny BERT, OWLv2 with tiny ViT/text towers), saved with its
processor and a hand-made vocabulary to a temporary folder, and loaded back through
`GroundingDetector.from_folder`: the loading path is the real one and nothing is
downloaded. About 15 s on 2 CPU cores, most of it importing transformers.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from refseg_ros.adapters.grounding import (Detection, GroundingDetector, GroundingModelError, GroundingWorker,
                                           RegroundPolicy, best_box, box_iou, continues_track,
                                           degenerate_reason, match_to_track, read_family)

transformers = pytest.importorskip("transformers")
from support.tiny_models import OWL_PIXELS, OWL_SCORE, load_owl, save_owlv2  # noqa: E402

HEIGHT, WIDTH = 96, 128  # a non-square frame: x and y scale differently
CAPTION = "a red cup"
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "red", "cup", "the", "on", "table"]


def _frame(seed: int = 0, fill: int | None = None) -> np.ndarray:
    if fill is not None:
        return np.full((HEIGHT, WIDTH, 3), fill, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def _bert_tokenizer(root: Path):
    vocab = root / "bert_vocab.txt"
    vocab.write_text("\n".join(BERT_WORDS) + "\n")
    return transformers.BertTokenizer(str(vocab))


def _save_grounding_dino(folder: Path, mm: bool) -> Path:
    """A tiny (MM-)Grounding DINO: Swin 8 channels, BERT 32 wide, d_model 32, 8 queries."""
    torch.manual_seed(1 if mm else 0)
    backbone = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                       num_heads=[1, 1, 1, 1], window_size=2, out_indices=[2, 3, 4])
    text = transformers.BertConfig(vocab_size=len(BERT_WORDS), hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    # d_model 32: the input projections' GroupNorm has 32 groups; 2 decoder layers: the
    # box heads are tied across layers, which needs more than one.
    sizes = dict(backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                 num_queries=8, encoder_n_points=1, decoder_n_points=1)
    if mm:
        model = transformers.MMGroundingDinoForObjectDetection(transformers.MMGroundingDinoConfig(**sizes))
    else:
        model = transformers.GroundingDinoForObjectDetection(transformers.GroundingDinoConfig(**sizes))
    image_processor = transformers.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    processor = transformers.GroundingDinoProcessor(image_processor=image_processor,
                                                    tokenizer=_bert_tokenizer(folder.parent))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grounding_models")
    return {
        "grounding-dino": _save_grounding_dino(root / "gdino", mm=False),
        "mm-grounding-dino": _save_grounding_dino(root / "mmgdino", mm=True),
        "owlv2": save_owlv2(root / "owlv2"),
    }


def _owl(folder: Path, **options) -> GroundingDetector:
    return load_owl(folder, **options)


@pytest.fixture(scope="module")
def owl(folders) -> GroundingDetector:
    return _owl(folders["owlv2"], max_detections=100)


def _assert_well_formed(detections: list[Detection]) -> None:
    assert detections, "the tiny model with min_score 0 always returns boxes"
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    for d in detections:
        x0, y0, x1, y1 = d.box
        assert 0.0 <= x0 < x1 <= WIDTH and 0.0 <= y0 < y1 <= HEIGHT, d.box
        assert 0.0 <= d.score <= 1.0
        assert d.frame_size == (HEIGHT, WIDTH)
        assert d.label and "[SEP]" not in d.label and "[CLS]" not in d.label


# ---------------------------------------------------------------------------- detector


@pytest.mark.parametrize("family", ["grounding-dino", "mm-grounding-dino"])
def test_grounding_dino_boxes_are_the_models_in_frame_pixels(folders, family):
    detector = GroundingDetector.from_folder(folders[family], min_score=0.0, max_detections=100)
    assert detector.family.name == family
    assert type(detector.model).__name__ == detector.family.model_class
    frame = _frame(3)
    detections = detector.detect(frame, CAPTION)
    _assert_well_formed(detections)
    # Independently of the post-processing: the best query's (cx, cy, w, h), normalised
    # to the frame, times (W, H), clipped. The processor sees "a red cup." (lowercase,
    # closed by a period, as Grounding DINO was trained).
    with torch.inference_mode():
        inputs = detector.processor(images=frame, text=CAPTION + ".", return_tensors="pt")
        out = detector.model(**inputs)
    scores = out.logits.sigmoid().max(dim=-1).values[0]
    q = int(scores.argmax())
    cx, cy, w, h = out.pred_boxes[0, q].tolist()
    expected = (max(cx - w / 2, 0) * WIDTH, max(cy - h / 2, 0) * HEIGHT,
                min(cx + w / 2, 1) * WIDTH, min(cy + h / 2, 1) * HEIGHT)
    assert detections[0].score == pytest.approx(float(scores[q]), abs=1e-5)
    assert detections[0].box == pytest.approx(expected, abs=1e-3)
    assert len(detections) <= 8  # one per query at most


def test_grounding_dino_caption_words_become_labels(folders):
    detector = GroundingDetector.from_folder(folders["grounding-dino"], min_score=0.0, text_threshold=0.0)
    detections = detector.detect(_frame(4), "A Red Cup")
    _assert_well_formed(detections)
    # every word of the caption is above a text threshold of 0, the special tokens are not kept
    assert {d.label for d in detections} == {"a red cup"}


def test_owlv2_box_is_scaled_through_the_square_padding(owl):
    detections = owl.detect(_frame(5), CAPTION)
    _assert_well_formed(detections)
    assert len(detections) == 16  # a 64 px input in 16 px patches: 4 x 4 patches, one box each
    for d in detections:
        assert d.box == pytest.approx(OWL_PIXELS, abs=0.05)
        assert d.score == pytest.approx(OWL_SCORE, abs=1e-5)
        assert d.label == CAPTION


def test_max_detections_keeps_the_best(folders):
    detector = GroundingDetector.from_folder(folders["grounding-dino"], min_score=0.0, max_detections=3)
    everything = GroundingDetector.from_folder(folders["grounding-dino"], min_score=0.0).detect(_frame(3), CAPTION)
    top = detector.detect(_frame(3), CAPTION)
    assert len(everything) > 3
    assert [d.score for d in top] == [d.score for d in everything[:3]]


def test_min_score_drops_lower_scores(folders):
    everything = GroundingDetector.from_folder(folders["grounding-dino"], min_score=0.0).detect(_frame(3), CAPTION)
    cut = (everything[0].score + everything[-1].score) / 2
    kept = GroundingDetector.from_folder(folders["grounding-dino"], min_score=cut).detect(_frame(3), CAPTION)
    assert kept and all(d.score > cut for d in kept)
    assert len(kept) == sum(d.score > cut for d in everything)


def test_threshold_relative_to_the_returned_scores(folders):
    detector = GroundingDetector.from_folder(folders["grounding-dino"], min_score=0.0)
    detections = detector.detect(_frame(6), CAPTION)
    eligible_scores = [d.score for d in detections if degenerate_reason(d.box, (HEIGHT, WIDTH)) is None]
    top = max(eligible_scores)
    chosen = best_box(detections, threshold=top)
    assert chosen is not None and chosen.score == top
    # a caption that matches nothing: every score under the threshold -> no box at all
    assert best_box(detections, threshold=math.nextafter(max(d.score for d in detections), 1.0)) is None


def test_owlv2_threshold_and_full_frame_refusal(owl, folders):
    detections = owl.detect(_frame(7), CAPTION)
    assert best_box(detections, OWL_SCORE - 0.01) == detections[0]
    assert best_box(detections, OWL_SCORE + 0.01) is None
    # a box head that says "everything": w, h saturate to the whole padded square, which
    # clipped to the frame is the full frame -> refused however confident
    wide = _owl(folders["owlv2"])
    with torch.no_grad():
        wide.model.box_head.dense2.bias.copy_(torch.tensor([0.0, 0.0, 12.0, 12.0]))
    full = wide.detect(_frame(7), CAPTION)
    assert full and all(d.box == pytest.approx((0.0, 0.0, WIDTH, HEIGHT), abs=0.01) for d in full)
    assert best_box(full, 0.0) is None
    # a box wholly in the padding under the frame (y 100..124 of the 128 square) is no box
    with torch.no_grad():
        wide.model.box_head.dense2.bias.copy_(torch.logit(torch.tensor([0.5, 0.875, 0.25, 0.1875])))
    assert wide.detect(_frame(7), CAPTION) == []


def test_detect_rejects_bad_input(owl):
    with pytest.raises(ValueError, match="uint8"):
        owl.detect(_frame().astype(np.float32), CAPTION)
    with pytest.raises(ValueError, match="H x W x 3"):
        owl.detect(_frame()[..., 0], CAPTION)
    with pytest.raises(ValueError, match="caption"):
        owl.detect(_frame(), "   ")


# ------------------------------------------------------------------------- bad folders


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(GroundingModelError, match="no_such_model") as err:
        GroundingDetector.from_folder(missing)
    assert str(missing) in str(err.value) and isinstance(err.value, ValueError)


def test_missing_config_and_unknown_model_type_name_the_path(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(GroundingModelError, match="config.json") as err:
        read_family(folder)
    assert str(folder) in str(err.value)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(GroundingModelError, match="JSON") as err:
        read_family(folder)
    assert str(folder / "config.json") in str(err.value)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(GroundingModelError, match="'bert'") as err:
        GroundingDetector.from_folder(folder)
    assert str(folder / "config.json") in str(err.value) and "owlv2" in str(err.value)


@pytest.mark.parametrize("family,removed,what", [
    ("owlv2", "model.safetensors", "model weights"),
    ("owlv2", "tokenizer.json", "tokenizer"),
    ("grounding-dino", "processor_config.json", "processor config"),
])
def test_missing_file_names_the_path(folders, tmp_path, family, removed, what):
    folder = tmp_path / "copy"
    shutil.copytree(folders[family], folder)
    (folder / removed).unlink()
    with pytest.raises(GroundingModelError, match=what) as err:
        GroundingDetector.from_folder(folder)
    assert str(folder) in str(err.value) and removed in str(err.value)


def test_weights_lacking_a_parameter_are_refused(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "copy"
    shutil.copytree(folders["owlv2"], folder)
    state = load_file(folder / "model.safetensors")
    del state["box_head.dense2.bias"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(GroundingModelError, match="box_head.dense2.bias") as err:
        GroundingDetector.from_folder(folder)
    assert str(folder) in str(err.value)


# --------------------------------------------------------------------------- selection

SIZE = (100, 200)  # height, width of the hand-made frame


def _det(box, score, label="cup", frame_size=SIZE) -> Detection:
    return Detection(box=tuple(float(v) for v in box), score=score, label=label, frame_size=frame_size)


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 2, 1), (1, 0, 3, 1)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 5, 5, 9)) == 0.0  # no area
    assert box_iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)


def test_best_box_threshold():
    dets = [_det((10, 10, 50, 50), 0.4), _det((60, 10, 90, 50), 0.7)]
    assert best_box(dets, 0.5) is dets[1]  # best score wins whatever the order given
    assert best_box(dets, 0.7) is dets[1]  # at the threshold counts
    assert best_box(dets, 0.71) is None
    assert best_box([], 0.0) is None


@pytest.mark.parametrize("box,reason", [
    ((0, 0, 200, 100), "covers 100%"),  # the whole frame
    ((-50, -50, 300, 300), "covers 100%"),  # larger than the frame
    ((0, 0, 196, 98), "covers 96%"),  # 96 % of the area
    ((10, 10, 10, 60), "under 1"),  # zero width
    ((10, 10, 60, 10.5), "under 1"),  # half a pixel high
    ((250, 10, 300, 60), "under 1"),  # outside the frame
])
def test_degenerate_boxes_are_refused(box, reason):
    assert reason in degenerate_reason(box, SIZE)
    assert best_box([_det(box, 0.99)], 0.1) is None


def test_a_box_short_of_the_area_limit_and_a_degenerate_best_is_skipped():
    near_full = _det((0, 0, 190, 95), 0.8)  # 90 % of the frame
    assert degenerate_reason(near_full.box, SIZE) is None
    full = _det((0, 0, 200, 100), 0.99)
    assert best_box([full, near_full], 0.5) is near_full
    assert best_box([full], 0.5, max_area_fraction=1.01) is full


def test_frame_size_is_needed_to_refuse_full_frame_boxes():
    unsized = _det((0, 0, 200, 100), 0.9, frame_size=None)
    with pytest.raises(ValueError, match="frame_size"):
        best_box([unsized], 0.5)
    assert best_box([unsized], 0.5, frame_size=SIZE) is None
    assert best_box([unsized], 0.5, frame_size=(1000, 1000)) is unsized


def test_match_to_track_and_ids_stay_stable():
    """Two tracked targets, re-grounded each on a detection list in any order: each id
    takes the detection on its own box, none jumps to the other's."""
    tracked = {1: (10.0, 10.0, 50.0, 50.0), 2: (120.0, 20.0, 170.0, 80.0)}
    on_1 = _det((12, 11, 52, 49), 0.6)
    on_2 = _det((118, 22, 168, 82), 0.9)
    stray = _det((60, 60, 90, 95), 0.3)
    for dets in ([on_1, on_2, stray], [stray, on_2, on_1], [on_2, stray, on_1]):
        assert dets[match_to_track(dets, tracked[1], 0.5)] is on_1
        assert dets[match_to_track(dets, tracked[2], 0.5)] is on_2
    assert match_to_track([stray], tracked[1], 0.1) is None
    assert match_to_track([], tracked[1], 0.0) is None
    # the best detection continues target 2's track: accepted for it, and only for it
    assert continues_track([on_1, on_2, stray], tracked[2], 0.5, 0.5) is on_2
    assert continues_track([on_1, on_2, stray], tracked[1], 0.5, 0.5) is None  # best is elsewhere: keep 1
    assert continues_track([on_1, stray], tracked[1], 0.5, 0.5) is on_1
    assert continues_track([on_1, on_2], tracked[1], 0.95, 0.5) is None  # nothing above threshold
    assert continues_track([on_1], tracked[1], 0.5, 0.99) is None  # overlaps too little


def test_continues_track_prefers_the_closer_of_two_eligible_boxes():
    tracked = (10.0, 10.0, 50.0, 50.0)
    loose = _det((5, 5, 60, 60), 0.9)  # best score, IoU 0.53
    tight = _det((10, 10, 50, 52), 0.8)  # IoU 0.95
    assert continues_track([loose, tight], tracked, 0.5, 0.5) is None
    assert continues_track([loose, tight], tracked, 0.85, 0.5) is loose  # tight not eligible
    full = _det((0, 0, 200, 100), 0.99)  # never eligible, so it does not block
    assert continues_track([full, tight], tracked, 0.5, 0.5) is tight


# ------------------------------------------------------------------------------ policy


@pytest.mark.parametrize("state,now,last,interval,retry,due", [
    ("acquiring", 5.0, None, 0.0, 0.0, True),
    ("acquiring", 5.0, 5.0, 2.0, 0.0, True),  # every frame while searching
    ("lost", 5.0, 4.9, 0.0, 0.0, True),
    ("lost", 5.0, 4.5, 0.0, 1.0, False),  # retry_s limits the searching rate
    ("lost", 5.0, 4.0, 0.0, 1.0, True),
    ("tracked", 5.0, None, 0.0, 0.0, False),  # interval 0: never while tracked
    ("tracked", 100.0, 0.0, 0.0, 0.0, False),
    ("tracked", 5.0, None, 2.0, 0.0, True),  # never grounded (e.g. taught by a mask)
    ("tracked", 5.0, 4.0, 2.0, 0.0, False),
    ("tracked", 6.0, 4.0, 2.0, 0.0, True),
    ("tracked", 3.0, 4.0, 2.0, 0.0, True),  # the clock went back
    ("occluded", 100.0, 0.0, 2.0, 0.0, False),
    ("occluded", 100.0, None, 2.0, 0.0, False),
])
def test_reground_policy(state, now, last, interval, retry, due):
    assert RegroundPolicy(interval_s=interval, retry_s=retry).due(state, now, last) is due


def test_reground_policy_takes_engine_states_and_refuses_nonsense():
    from refseg_ros.engine.types import TargetState

    policy = RegroundPolicy(interval_s=1.0)
    assert policy.due(TargetState.TRACKED, 2.0, 0.5) is True
    assert policy.due(TargetState.OCCLUDED, 2.0, 0.5) is False
    with pytest.raises(ValueError, match="unknown target state"):
        policy.due("sleeping", 0.0, None)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="interval_s"):
            RegroundPolicy(interval_s=bad)


# ------------------------------------------------------------------------------ worker


class GatedDetector:
    """A real detector behind a turnstile: `detect` records the frame's fill value, then
    waits for a permit (`let_through`), then raises for the caption "boom" or detects."""

    def __init__(self, detector: GroundingDetector) -> None:
        self.detector = detector
        self.permits = threading.Semaphore(0)
        self.seen: list[int] = []

    def let_through(self, count: int = 1) -> None:
        self.permits.release(count)

    def detect(self, image: np.ndarray, caption: str) -> list[Detection]:
        self.seen.append(int(image[0, 0, 0]))
        if not self.permits.acquire(timeout=30):
            raise TimeoutError("no permit within 30 s")
        if caption == "boom":
            raise RuntimeError("boom")
        return self.detector.detect(image, caption)


def _wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s")
        time.sleep(0.002)


def _wait_result(worker: GroundingWorker, key, timeout: float = 30.0):
    box: list = []
    _wait_until(lambda: box.append(worker.poll(key)) or box[-1] is not None, timeout)
    return box[-1]


def test_worker_never_blocks_and_keeps_only_the_latest_request(owl):
    gated = GatedDetector(owl)
    worker = GroundingWorker(gated)
    try:
        assert worker.submit("cup", _frame(fill=1), CAPTION, stamp=1.0) is False
        _wait_until(lambda: gated.seen == [1])  # the detector holds request 1 until let through
        start = time.perf_counter()
        replaced = [worker.submit("cup", _frame(fill=i), CAPTION, stamp=float(i)) for i in (2, 3, 4)]
        assert time.perf_counter() - start < 1.0  # the detector is blocked: submit did not wait on it
        assert replaced == [False, True, True]
        assert worker.skipped == 2 and worker.submitted == 4
        assert worker.poll("cup") is None and worker.pending("cup")
        gated.let_through()
        first = _wait_result(worker, "cup")
        assert first.key == "cup" and first.stamp == 1.0 and first.ok and first.seconds > 0
        assert first.detections and first.detections[0].box == pytest.approx(OWL_PIXELS, abs=0.05)
        _wait_until(lambda: gated.seen == [1, 4])  # requests 2 and 3 were replaced before they ran
        assert worker.pending("cup")
        gated.let_through()
        latest = _wait_result(worker, "cup")
        assert latest.stamp == 4.0 and latest.caption == CAPTION
        _wait_until(lambda: worker.completed == 2)
        assert not worker.pending("cup") and gated.seen == [1, 4]
    finally:
        gated.let_through(10)
        assert worker.close(timeout=30)


def test_an_unread_result_is_replaced_by_the_next(owl):
    gated = GatedDetector(owl)
    gated.let_through(10)
    with GroundingWorker(gated) as worker:
        worker.submit("cup", _frame(fill=1), CAPTION, 1.0)
        _wait_until(lambda: worker.completed == 1)
        worker.submit("cup", _frame(fill=2), CAPTION, 2.0)
        _wait_until(lambda: worker.completed == 2)
        assert worker.poll("cup").stamp == 2.0
        assert worker.poll("cup") is None  # handed over once


def test_worker_copies_the_frame_and_serves_keys_in_turn(owl):
    gated = GatedDetector(owl)
    with GroundingWorker(gated) as worker:
        worker.submit("busy", _frame(fill=9), CAPTION, 0.0)
        _wait_until(lambda: gated.seen == [9])
        buffer = _frame(fill=5)
        worker.submit("a", buffer, CAPTION, 1.0)
        worker.submit("b", _frame(fill=6), CAPTION, 2.0)
        worker.submit("a", buffer, CAPTION, 3.0)  # replaces, keeps a's turn before b's
        buffer[:] = 200  # the caller reuses its buffer
        gated.let_through(3)
        _wait_until(lambda: worker.completed == 3)
        assert worker.poll("a").stamp == 3.0 and worker.poll("b").stamp == 2.0
        assert gated.seen == [9, 5, 6]


def test_a_raising_detector_yields_an_error_and_the_worker_keeps_serving(owl):
    gated = GatedDetector(owl)
    gated.let_through(10)
    worker = GroundingWorker(gated)
    try:
        worker.submit("t", _frame(fill=1), "boom", 1.0)
        failed = _wait_result(worker, "t")
        assert not failed.ok and failed.error == "RuntimeError: boom" and failed.detections == []
        assert worker.alive and worker.failed == 1
        worker.submit("t", _frame(fill=2), CAPTION, 2.0)
        fine = _wait_result(worker, "t")
        assert fine.ok and fine.stamp == 2.0 and fine.detections
    finally:
        assert worker.close(timeout=30)


def test_cancel_drops_the_running_and_waiting_results(owl):
    gated = GatedDetector(owl)
    worker = GroundingWorker(gated)
    try:
        worker.submit("gone", _frame(fill=1), CAPTION, 1.0)
        _wait_until(lambda: gated.seen == [1])
        worker.submit("gone", _frame(fill=2), CAPTION, 2.0)
        worker.cancel("gone")
        assert not worker.pending("gone")
        worker.submit("kept", _frame(fill=3), CAPTION, 3.0)
        gated.let_through(2)
        assert _wait_result(worker, "kept").stamp == 3.0
        assert worker.poll("gone") is None and gated.seen == [1, 3]
    finally:
        gated.let_through(10)
        assert worker.close(timeout=30)


def test_close_joins_and_refuses_new_work(owl):
    gated = GatedDetector(owl)
    worker = GroundingWorker(gated)
    worker.submit("t", _frame(fill=1), CAPTION, 1.0)
    _wait_until(lambda: gated.seen == [1])
    worker.submit("t", _frame(fill=2), CAPTION, 2.0)  # waiting: dropped by close
    closer = threading.Thread(target=worker.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # close waits for the running detection ...
    gated.let_through(10)
    closer.join(30)
    assert not closer.is_alive() and not worker.alive  # ... and joins the thread
    assert gated.seen == [1] and not worker.pending("t")
    assert worker.close() is True  # again: harmless
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit("t", _frame(), CAPTION, 3.0)
