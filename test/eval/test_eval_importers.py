"""Benchmark importers on miniature copies of each published layout (files written
here): episodes written, protocol recorded, layout errors, and the scoring rule checked
against hand-computed cases of the official toolkits' conventions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from refseg_ros.eval import bags, cli, metrics, runner
from refseg_ros.eval.importers import davis2017, read_index, run_options, summarize
from refseg_ros.eval.sources import FrameResult
from support.evaluation import H, W, frames_folder, make_ytvos_layout, palette_png, two_objects


def davis_labels(i):
    """Frame i of sequence 'blobs': object 1 a moving box, object 2 leaves after frame 2,
    a void (255) band, and object 3 from frame 2 on (not in the first frame)."""
    lm = np.zeros((H, W), np.uint8)
    lm[2 + i : 10 + i, 3:12] = 1
    if i <= 2:
        lm[12:20, 15 + i : 25 + i] = 2
    lm[22:, :] = 255
    if i >= 2:
        lm[0:2, 20:30] = 3
    return lm


def make_davis2017(root, seqs=("blobs", "dots"), n=5, split="val"):
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(seqs) + "\n")
    rng = np.random.default_rng(0)
    for seq in seqs:
        for i in range(n):
            img_dir = root / "JPEGImages" / "480p" / seq
            img_dir.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_dir / f"{i:05d}.jpg"),
                        rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
            lm = davis_labels(i) if seq == "blobs" else np.where(davis_labels(i) == 1, 1, 0)
            palette_png(root / "Annotations" / "480p" / seq / f"{i:05d}.png", lm)
    return root


# --- DAVIS 2017 semi-supervised -------------------------------------------------------


def test_davis2017_bags_and_index(tmp_path):
    data = make_davis2017(tmp_path / "DAVIS")
    path = davis2017.build(data, tmp_path / "out")
    assert path == tmp_path / "out" / "index.json"
    index = read_index(tmp_path / "out")
    assert index["benchmark"] == "davis2017" and index["split"] == "val"
    assert [b["name"] for b in index["bags"]] == ["blobs", "dots"]
    assert run_options(index) == {"prompt": "first-frame-gt", "overlaps": "label-map"}
    assert index["protocol"]["summary"] == "mean-over-objects"
    blobs = index["bags"][0]
    assert blobs["frames"] == 5 and blobs["scored_frames"] == 3  # frames 1..3
    assert blobs["objects"] == {"1": "blobs 1", "2": "blobs 2"}  # 3 is not in frame 0
    assert "absent_in_first_frame" not in blobs
    with bags.BagReader(blobs["bag"]) as r:
        assert r.protocol == "video"
        frames = list(r.frames())
        assert len(frames) == 5
        gts = dict(r.label_maps())
        # The last annotated frame carries no ground truth (the toolkit scores [1:-1]).
        assert sorted(gts) == [f.stamp_ns for f in frames[:4]]
        for i in range(4):
            want = davis_labels(i).copy()
            want[want == 255] = 0  # void is background in semi-supervised scoring
            want[want == 3] = 0  # ids above the first frame's maximum are never scored
            np.testing.assert_array_equal(gts[frames[i].stamp_ns], want)
    assert (tmp_path / "out" / "bags" / "dots" / "metadata.yaml").is_file()


def test_davis2017_cli_sqlite_and_sequences(tmp_path, capsys):
    data = make_davis2017(tmp_path / "DAVIS")
    rc = cli.main(["build", "davis2017", str(data), str(tmp_path / "out"), "--storage", "sqlite3",
                   "--sequences", "dots"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out" / "index.json")
    index = read_index(tmp_path / "out" / "index.json")
    assert [b["name"] for b in index["bags"]] == ["dots"]
    assert index["bags"][0]["storage"] == "sqlite3"
    assert list((tmp_path / "out" / "bags" / "dots").glob("*.db3"))


@pytest.mark.parametrize("remove, named", [
    ("ImageSets/2017/val.txt", "sequence list .*ImageSets/2017/val.txt"),
    ("JPEGImages/480p/dots", "frame folder .*JPEGImages/480p/dots"),
    ("Annotations/480p/blobs", "annotation folder .*Annotations/480p/blobs"),
    ("Annotations/480p/dots/00000.png", "first-frame annotation .*Annotations/480p/dots/00000.png"),
])
def test_davis2017_wrong_layout_names_the_missing_file(tmp_path, capsys, remove, named):
    import shutil

    data = make_davis2017(tmp_path / "DAVIS")
    target = data / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=named):
        davis2017.build(data, tmp_path / "out")
    rc = cli.main(["build", "davis2017", str(data), str(tmp_path / "out2")])
    assert rc == cli.EXIT_BAD_INPUT
    assert str(target) in capsys.readouterr().err


def test_davis2017_not_a_davis_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing DAVIS folder"):
        davis2017.build(tmp_path / "nowhere", tmp_path / "out")


class GroundTruthSource:
    """Answers every prompted target with ``answer(mask, label_map, frame, prompt)``, where
    ``mask`` is the target's ground truth on that frame (empty where the frame has none)."""

    def __init__(self, answer):
        self.answer = answer

    def info(self):
        return {"kind": "ground truth", "random_weights": False}

    def timing_label(self):
        return "none"

    def results(self, plan_, reader, camera_topic, skip):
        gts = dict(reader.label_maps())
        shape = next(iter(gts.values())).shape
        for ep in plan_.episodes:
            for i in ep.frames:
                stamp = plan_.frame_stamps[i]
                lm = gts.get(stamp)
                masks = {}
                for p in ep.prompts:
                    m = (lm == p.target_id) if lm is not None else np.zeros(shape, bool)
                    masks[p.target_id] = self.answer(m, lm, i, p)
                yield FrameResult(stamp, ep.index, masks, {}, {}, 0.001)


def test_davis2017_scoring_follows_the_toolkit(tmp_path):
    data = make_davis2017(tmp_path / "DAVIS")
    index = read_index(davis2017.build(data, tmp_path / "out"))
    reports = {}
    for entry in index["bags"]:
        name = entry["name"]
        # blobs: object 1 lost on frame 2; frame 4 (the last) lost too but never scored.
        lost = {(1, 2), (1, 4)} if name == "blobs" else set()
        cfg = runner.RunConfig(bag=entry["bag"], out=tmp_path / "runs" / name, progress=False,
                               **run_options(index))
        runner.evaluate(cfg, source=GroundTruthSource(
            lambda m, lm, i, p, lost=lost: np.zeros_like(m) if (p.target_id, i) in lost else m))
        reports[name] = json.loads((tmp_path / "runs" / name / "report.json").read_text())
        results = (tmp_path / "runs" / name / "results.jsonl").read_text().splitlines()
        assert len(results) == entry["frames"]  # inference ran on every frame
        assert sorted({r["frame"] for r in reports[name]["frames"]}) == [1, 2, 3]
    blobs = reports["blobs"]["per_target"]
    # Object 1 on frames 1, 2, 3: J = F = 1, 0, 1.
    assert blobs["1"]["j_mean"] == pytest.approx(2 / 3)
    assert blobs["1"]["j_recall"] == pytest.approx(2 / 3)
    # Toolkit decay of 3 values: edges round(linspace(1, 3, 5)) - 1 = [0, 1, 1, 2, 2];
    # first bin [1, 0], last bin [1] -> 0.5 - 1.
    assert blobs["1"]["j_decay"] == pytest.approx(-0.5)
    # Object 2 is gone from frame 3 on: both empty there, J = F = 1.
    assert blobs["2"]["j_mean"] == pytest.approx(1.0) and blobs["2"]["f_mean"] == pytest.approx(1.0)
    summary = summarize(index, reports)
    assert summary["objects"] == 3  # blobs_1, blobs_2, dots_1
    assert summary["j_mean"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert summary["jf_mean"] == pytest.approx((summary["j_mean"] + summary["f_mean"]) / 2)
    assert set(summary["per_object"]) == {"blobs_1", "blobs_2", "dots_1"}
    with pytest.raises(KeyError, match="dots"):
        summarize(index, {"blobs": reports["blobs"]})


# --- metric conventions (davis2017-evaluation, hand-computed) -------------------------


def stripe(h, w, col):
    m = np.zeros((h, w), bool)
    m[:, col:] = True
    return m


def test_davis_boundary_tolerance_is_ceil_of_diagonal_fraction():
    # 480p DAVIS frame: ceil(0.008 * hypot(480, 854)) = ceil(7.84) = 8 pixels.
    assert metrics.boundary_tolerance_px((480, 854)) == 8
    assert metrics.boundary_tolerance_px((H, W)) == 1  # ceil(0.32)
    gt = stripe(480, 854, 400)  # its boundary is column 399 only (seg2bmap rule)
    assert np.array_equal(np.nonzero(metrics.boundary_map(gt).any(0))[0], [399])
    assert metrics.boundary_f(stripe(480, 854, 408), gt) == 1.0  # 8 px: matched
    assert metrics.boundary_f(stripe(480, 854, 409), gt) == 0.0  # 9 px: precision = recall = 0
    # J of the 8 px shift: 446 / 454 columns.
    assert metrics.region_similarity(stripe(480, 854, 408), gt) == pytest.approx(446 / 454)


def test_davis_empty_frame_conventions():
    empty = np.zeros((H, W), bool)
    full = np.ones((H, W), bool)  # touches every border: no boundary pixel at all
    box = np.zeros((H, W), bool)
    box[5:10, 5:10] = True
    assert metrics.score_frame(empty, empty) == metrics.FrameScore(1.0, 1.0)  # absent, said absent
    assert metrics.score_frame(box, empty) == metrics.FrameScore(0.0, 0.0)  # precision 0, recall 1
    assert metrics.score_frame(empty, box) == metrics.FrameScore(0.0, 0.0)  # precision 1, recall 0
    assert metrics.score_frame(full, full) == metrics.FrameScore(1.0, 1.0)  # both boundaries empty
    s = metrics.boundary_score(full, box)
    assert (s.precision, s.recall, s.f) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("values, decay", [
    ([1.0], 0.0),  # edges [0,0,0,0,0]: every bin is frame 0
    # linspace(1, 2, 5) = 1, 1.25, 1.5, 1.75, 2 -> round(+1e-10) - 1 = [0, 0, 1, 1, 1]:
    # first bin frame 0 = [1], last bin frame 1 = [0].
    ([1.0, 0.0], 1.0),
    ([1.0, 0.8, 0.6, 0.4, 0.2], 0.6),  # edges [0,1,2,3,4]: (1+.8)/2 - (.4+.2)/2
    ([1, 1, 1, 1, 0, 0, 0, 0, 0], 1.0),  # edges [0,2,4,6,8]: [1,1,1] - [0,0,0]
])
def test_davis_decay_bins(values, decay):
    s = metrics.score_sequence([metrics.FrameScore(v, v) for v in values])
    assert s.j_decay == pytest.approx(decay)
    assert np.isnan(metrics.score_sequence([]).j_decay)


# --- COCO RLE (MeViS mask_dict.json) --------------------------------------------------


def test_rle_hand_cases_and_round_trip():
    from refseg_ros.eval.importers import rle

    # 2x2 [[0, 1], [0, 1]]: column-major runs 2 background, 2 foreground -> "22".
    want = np.array([[0, 1], [0, 1]], bool)
    assert rle.encode(want) == {"size": [2, 2], "counts": "22"}
    np.testing.assert_array_equal(rle.decode({"size": [2, 2], "counts": "22"}), want)
    np.testing.assert_array_equal(rle.decode({"size": [2, 2], "counts": [2, 2]}), want)
    # Starts with foreground: a zero-length background run first.
    np.testing.assert_array_equal(rle.decode({"size": [1, 3], "counts": [0, 1, 2]}), [[1, 0, 0]])
    rng = np.random.default_rng(3)
    for shape in [(24, 32), (7, 5), (40, 41)]:
        m = rng.random(shape) > 0.6
        m[3:6, 2:5] = True  # long runs need several 5-bit groups; differences go negative
        np.testing.assert_array_equal(rle.decode(rle.encode(m)), m)
    with pytest.raises(ValueError, match="cover 5 pixels, the mask has 2x2"):
        rle.decode({"size": [2, 2], "counts": [2, 3]})


# --- referring VOS: Ref-YouTube-VOS, Ref-DAVIS 2017, MeViS -----------------------------


def read_bag(path):
    with bags.BagReader(path) as r:
        return (r.protocol, r.object_labels(), [c.text for c in r.captions()],
                list(r.frames()), dict(r.label_maps()), [c.stamp_ns for c in r.captions()])


def test_ref_youtube_vos_train_one_bag_per_expression(tmp_path):
    from refseg_ros.eval.importers import refvos

    exps = [{"exp": "a cat on the left", "obj_id": "1"}, {"exp": "the dog", "obj_id": "2"}]
    make_ytvos_layout(tmp_path / "ytvos", "train", exps)
    index = read_index(refvos.build("ref-youtube-vos", tmp_path / "ytvos", tmp_path / "out",
                                    split="train"))
    assert index["benchmark"] == "ref-youtube-vos"
    assert [e["name"] for e in index["bags"]] == ["v1_0", "v1_1"]
    assert run_options(index) == {"prompt": "caption", "overlaps": "keep"}
    for k, entry in enumerate(index["bags"]):
        assert entry["caption"] == exps[k]["exp"] and entry["scored_frames"] == 3
        protocol, objects, captions, frames, gts, cap_stamps = read_bag(entry["bag"])
        assert protocol == "video" and objects == {1: exps[k]["exp"]}
        assert captions == [exps[k]["exp"]]
        assert cap_stamps[0] < frames[0].stamp_ns  # the caption comes before the first frame
        assert len(frames) == 3 and sorted(gts) == [f.stamp_ns for f in frames]
        for i, f in enumerate(frames):  # 1 = the referred object only
            np.testing.assert_array_equal(gts[f.stamp_ns], two_objects(i) == k + 1)
    # Object 2 is absent on frame 1: its ground truth is empty there (scored: J = F = 1
    # when the prediction is empty too).
    _, _, _, frames, gts, _ = read_bag(index["bags"][1]["bag"])
    assert not gts[frames[1].stamp_ns].any()


def test_ref_youtube_vos_valid_has_no_ground_truth(tmp_path):
    from refseg_ros.eval.importers import refvos

    make_ytvos_layout(tmp_path / "ytvos", "valid", [{"exp": "a cat"}], annotate=False)
    index = read_index(refvos.build("ref-youtube-vos", tmp_path / "ytvos", tmp_path / "out"))
    assert index["split"] == "valid"
    assert index["protocol"]["scored_frames"] == "none (server)"
    entry = index["bags"][0]
    assert entry["scored_frames"] == 0
    with bags.BagReader(entry["bag"]) as r:
        assert [c.text for c in r.captions()] == ["a cat"] and len(list(r.frames())) == 3
        assert bags.GROUND_TRUTH_TOPIC not in r.topics  # results go to the server


def test_ref_davis_four_annotators(tmp_path):
    from refseg_ros.eval.importers import refvos

    # ReferFormer's order: per object, annotator 1 first-frame, 1 full, 2 first-frame, 2 full.
    exps = [{"exp": f"object {o} text {a}", "obj_id": str(o)} for o in (1, 2) for a in range(4)]
    make_ytvos_layout(tmp_path / "refdavis", "valid", exps, void=True)
    index = read_index(refvos.build("ref-davis", tmp_path / "refdavis", tmp_path / "out"))
    assert index["protocol"]["annotators"] == 4
    assert [e["annotator"] for e in index["bags"]] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [e["obj_id"] for e in index["bags"]] == ["1"] * 4 + ["2"] * 4
    assert index["protocol"]["scored_frames"] == "every listed frame"  # unsupervised task
    _, _, captions, frames, gts, _ = read_bag(index["bags"][5]["bag"])
    assert captions == ["object 2 text 1"] and len(gts) == 3
    want = (two_objects(2) == 2).astype(np.uint8)
    want[:, 30:] = 255  # the void band stays void: the toolkit leaves it out of J and F
    np.testing.assert_array_equal(gts[frames[2].stamp_ns], want)
    with bags.BagReader(index["bags"][5]["bag"]) as r:
        assert r.ignore_label() == 255


def make_mevis(root, split="valid_u"):
    from refseg_ros.eval.importers import rle

    names = frames_folder(root / split / "JPEGImages", "m1", n=3)
    masks = {"10": [], "11": []}
    for i in range(3):
        lm = two_objects(i)
        masks["10"].append(rle.encode(lm == 1))
        masks["11"].append(None if i == 1 else rle.encode(lm == 2))  # absent on frame 1
    (root / split / "mask_dict.json").write_text(json.dumps(masks))
    meta = {"videos": {"m1": {"frames": names, "expressions": {
        "0": {"exp": "the two moving things", "obj_id": [1, 2], "anno_id": [10, 11]},
        "1": {"exp": "the one that leaves", "obj_id": [2], "anno_id": [11]}}}}}
    (root / split / "meta_expressions.json").write_text(json.dumps(meta))


def test_mevis_expression_is_the_union_of_its_objects(tmp_path, capsys):
    make_mevis(tmp_path / "mevis")
    rc = cli.main(["build", "mevis", str(tmp_path / "mevis"), str(tmp_path / "out"),
                   "--storage", "sqlite3"])
    assert rc == 0
    index = read_index(capsys.readouterr().out.strip())
    assert index["split"] == "valid_u" and index["benchmark"] == "mevis"
    both, leaves = index["bags"]
    assert both["anno_id"] == [10, 11] and both["storage"] == "sqlite3"
    _, _, captions, frames, gts, _ = read_bag(both["bag"])
    assert captions == ["the two moving things"]
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(gts[f.stamp_ns], two_objects(i) > 0)
    _, _, _, frames, gts, _ = read_bag(leaves["bag"])
    assert [int(gts[f.stamp_ns].any()) for f in frames] == [1, 0, 1]  # null RLE: empty


@pytest.mark.parametrize("benchmark, remove, named", [
    ("mevis", "valid_u/meta_expressions.json", "expression file .*valid_u/meta_expressions.json"),
    ("mevis", "valid_u/mask_dict.json", "mask file .*valid_u/mask_dict.json"),
    ("mevis", "valid_u/JPEGImages/m1/00005.jpg", "frame .*JPEGImages/m1/00005.jpg"),
    ("ref-youtube-vos", "train/Annotations/v1/00010.png", "annotation .*Annotations/v1/00010.png"),
    ("ref-youtube-vos", "train/Annotations", "annotation folder .*train/Annotations"),
    ("ref-youtube-vos", "meta_expressions/train/meta_expressions.json",
     "expression file .*meta_expressions/train/meta_expressions.json"),
])
def test_refvos_wrong_layout_names_the_missing_file(tmp_path, benchmark, remove, named):
    import shutil

    from refseg_ros.eval.importers import refvos

    root = tmp_path / "data"
    if benchmark == "mevis":
        make_mevis(root)
        split = "valid_u"
    else:
        make_ytvos_layout(root, "train", [{"exp": "x", "obj_id": "1"}])
        split = "train"
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=named):
        refvos.build(benchmark, root, tmp_path / "out", split=split)
    assert not (tmp_path / "out" / "index.json").exists()


def test_refvos_expression_without_object_is_named(tmp_path):
    from refseg_ros.eval.importers import refvos

    make_ytvos_layout(tmp_path / "y", "train", [{"exp": "no id here"}])
    with pytest.raises(ValueError, match="video 'v1' expression 0 has no obj_id"):
        refvos.build("ref-youtube-vos", tmp_path / "y", tmp_path / "out", split="train")


def test_refvos_summary_is_the_mean_over_expressions(tmp_path):
    """J&F per expression, then the mean over expressions (each bag one object)."""
    from refseg_ros.eval.importers import refvos

    exps = [{"exp": f"e{a}", "obj_id": "1"} for a in range(4)]
    make_ytvos_layout(tmp_path / "rd", "valid", exps)
    index = read_index(refvos.build("ref-davis", tmp_path / "rd", tmp_path / "out"))
    js, fs = [0.9, 0.5, 0.7, 0.3], [0.8, 0.6, 0.4, 0.2]
    reports = {e["name"]: {"per_target": {"1": {"frames": 3, "j_mean": j, "f_mean": f,
                                                "j_recall": 1.0, "f_recall": 1.0,
                                                "j_decay": 0.0, "f_decay": 0.0}}}
               for e, j, f in zip(index["bags"], js, fs)}
    s = summarize(index, reports)
    assert s["objects"] == 4
    assert s["j_mean"] == pytest.approx(0.6) and s["f_mean"] == pytest.approx(0.5)
    assert s["jf_mean"] == pytest.approx(0.55)


# --- few-shot: FSS-1000 and the cross-domain sets (PATNet's episodes) ------------------


def _pair_files(img_path, mask_path, seed, h=20, w=28):
    rng = np.random.default_rng(seed)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(img_path)
    m = np.zeros((h, w), np.uint8)
    m[2 + seed % 5 : 12, 3 : 10 + seed % 7] = 200  # >= 128: object
    m[0, 0] = 100  # < 128: background
    Image.fromarray(m, mode="L").save(mask_path)


def make_fss(root, classes=("bee", "cup", "owl")):
    for c, name in enumerate(classes):
        for n in range(1, 11):
            _pair_files(root / name / f"{n}.jpg", root / name / f"{n}.png", 10 * c + n)
    return root


def make_deepglobe(root, per_class=3):
    for c in range(1, 7):
        for n in range(per_class):
            _pair_files(root / str(c) / "test" / "origin" / f"{c}{n}_sat.jpg",
                        root / str(c) / "test" / "groundtruth" / f"{c}{n}_sat.png", c + n)
    return root


def test_fss1000_every_query_of_the_listed_classes(tmp_path):
    from refseg_ros.eval.importers import fewshot

    data = make_fss(tmp_path / "FSS-1000")
    (tmp_path / "test.txt").write_text("owl\nbee\n")  # PATNet sorts the names
    eps = fewshot.sample_episodes("fss1000", data, shots=5, classes_file=tmp_path / "test.txt")
    assert [e["class"] for e in eps] == ["bee"] * 10 + ["owl"] * 10
    # Queries in sorted-path order: 1, 10, 2, ..., 9.
    assert [e["query"].name for e in eps[:3]] == ["1.jpg", "10.jpg", "2.jpg"]
    for e in eps:
        assert len(e["supports"]) == 5 and e["query"] not in e["supports"]
        assert {s.parent for s in e["supports"]} == {e["query"].parent}
    # Hand check of the first draw: RandomState(0).permutation(10)[0] = 2 -> "3.jpg"
    # (the query is 1.jpg, so it is kept).
    assert np.random.RandomState(0).permutation(10)[0] == 2
    assert eps[0]["supports"][0].name == "3.jpg"
    assert eps == fewshot.sample_episodes("fss1000", data, shots=5,
                                          classes_file=tmp_path / "test.txt")


def test_cross_domain_episode_lists_fixed_seed(tmp_path):
    from refseg_ros.eval.importers import fewshot

    data = make_deepglobe(tmp_path / "Deepglobe")
    one = fewshot.sample_episodes("deepglobe", data, shots=1, episodes=12)
    assert [e["class"] for e in one] == [str(c) for c in range(1, 7)] * 2  # e mod 6
    five = fewshot.sample_episodes("deepglobe", data, shots=5, episodes=12)
    for e in one + five:
        assert e["query"].parent.parent.parent.name == e["class"]
        assert e["query"] not in e["supports"]
    assert [len(e["supports"]) for e in five] == [5] * 12
    assert five == fewshot.sample_episodes("deepglobe", data, shots=5, episodes=12)
    other = fewshot.sample_episodes("deepglobe", data, shots=5, episodes=12, seed=1)
    assert other != five
    # Episode 0's query: the first draw of RandomState(0) over class 1's 3 images.
    first = np.random.RandomState(0).permutation(3)[0]
    assert one[0]["query"].name == f"1{first}_sat.jpg"


def test_isic_and_chest_xray_pairs(tmp_path):
    from refseg_ros.eval.importers import fewshot

    isic = tmp_path / "ISIC"
    for c in (1, 2, 3):
        for n in range(2):
            ident = f"ISIC_00{c}{n}"
            _pair_files(isic / "ISIC2018_Task1-2_Training_Input" / str(c) / f"{ident}.jpg",
                        isic / "ISIC2018_Task1_Training_GroundTruth" / f"{ident}_segmentation.png",
                        c + n)
    index = read_index(fewshot.build("isic", isic, tmp_path / "out_isic", episodes=3, size=None))
    assert [e["class"] for e in index["bags"]] == ["1", "2", "3"]
    assert index["bags"][0]["query"].startswith("ISIC2018_Task1-2_Training_Input/1/ISIC_001")
    lung = tmp_path / "LungSegmentation"
    for n in range(3):
        _pair_files(lung / "CXR_png" / f"CHNCXR_000{n}_0.png",
                    lung / "masks" / f"CHNCXR_000{n}_0_mask.png", n)
    index = read_index(fewshot.build("chest-xray", lung, tmp_path / "out_lung", episodes=2,
                                     shots=5, size=None))
    assert index["protocol"]["shots"] == 5 and index["protocol"]["episodes"] == 2
    entry = index["bags"][0]
    assert entry["query"].startswith("masks/CHNCXR_000") and len(entry["supports"]) == 5
    with bags.BagReader(entry["bag"]) as r:
        refs = list(r.references())
        assert len(refs) == 5 and {x.target_id for x in refs} == {1}
        n = entry["query"].split("/")[1][:-9]
        img = np.array(Image.open(lung / "CXR_png" / f"{n}.png").convert("RGB"))
        frame = next(r.frames())
        assert frame.image.tobytes() == img.tobytes()
        gt = next(iter(dict(r.label_maps()).values()))
        want = np.array(Image.open(lung / "masks" / f"{n}_mask.png")) >= 128
        np.testing.assert_array_equal(gt, want)


def test_fewshot_bags_resized_to_the_evaluation_size(tmp_path):
    from refseg_ros.eval.importers import fewshot

    data = make_fss(tmp_path / "FSS-1000", classes=("bee",))
    index = read_index(fewshot.build("fss1000", data, tmp_path / "out", size=10))
    assert len(index["bags"]) == 10 and index["protocol"]["eval_size"] == 10
    entry = index["bags"][0]
    assert entry["size"] == [10, 10]
    with bags.BagReader(entry["bag"]) as r:
        assert r.protocol == "one-shot"
        gt = next(iter(dict(r.label_maps()).values()))
        ref = next(r.references())
    # torch nearest: source row floor(i * 20 / 10) = 2i, column floor(i * 28 / 10).
    src = np.array(Image.open(data / "bee" / "1.png")) >= 128
    rows, cols = np.arange(10) * 2, np.floor(np.arange(10) * 2.8).astype(int)
    np.testing.assert_array_equal(gt.astype(bool), src[rows][:, cols])
    assert ref.image.shape == (10, 10, 3) and ref.label == "bee"


@pytest.mark.parametrize("remove, named", [
    ("bee/3.png", "mask .*bee/3.png"),
    ("cup", "class folder .*cup"),
])
def test_fewshot_wrong_layout_names_the_missing_file(tmp_path, remove, named):
    import shutil

    from refseg_ros.eval.importers import fewshot

    data = make_fss(tmp_path / "FSS-1000", classes=("bee", "cup"))
    (tmp_path / "test.txt").write_text("bee\ncup\n")
    target = data / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=named):
        fewshot.build("fss1000", data, tmp_path / "out", classes_file=tmp_path / "test.txt")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="class list .*nothere.txt"):
        fewshot.build("fss1000", data, tmp_path / "out", classes_file=tmp_path / "nothere.txt")
    (tmp_path / "Deepglobe").mkdir()
    with pytest.raises(FileNotFoundError, match="image folder .*Deepglobe/1/test/origin"):
        fewshot.build("deepglobe", tmp_path / "Deepglobe", tmp_path / "o2")


def test_fewshot_scoring_miou_fbiou(tmp_path, capsys):
    """Run the bags with a stand-in source (ground truth, shifted for class 2), then
    check mIoU and FB-IoU against sums computed here from the masks."""
    data = make_deepglobe(tmp_path / "Deepglobe")
    rc = cli.main(["build", "deepglobe", str(data), str(tmp_path / "out"), "--episodes", "4",
                   "--shots", "5", "--size", "0", "--storage", "sqlite3"])
    assert rc == 0
    index = read_index(capsys.readouterr().out.strip())
    assert run_options(index) == {"prompt": "reference-topic", "overlaps": "keep"}

    # Class "2" is answered with its ground truth shifted 2 pixels right.
    shifted = GroundTruthSource(lambda m, lm, i, p: np.roll(m, 2, axis=1) if p.label == "2" else m)

    inter, union, bg = {}, {}, [0, 0]
    reports = {}
    for entry in index["bags"]:
        out = tmp_path / "runs" / entry["name"]
        runner.evaluate(runner.RunConfig(bag=entry["bag"], out=out, progress=False,
                                         **run_options(index)), source=shifted)
        reports[entry["name"]] = json.loads((out / "report.json").read_text())
        with bags.BagReader(entry["bag"]) as r:
            gt = next(iter(dict(r.label_maps()).values())) == 1
        pred = np.roll(gt, 2, axis=1) if entry["class"] == "2" else gt
        c = entry["class"]
        inter[c] = inter.get(c, 0) + int((gt & pred).sum())
        union[c] = union.get(c, 0) + int((gt | pred).sum())
        bg[0] += int((~gt & ~pred).sum())
        bg[1] += int((~gt | ~pred).sum())
    s = summarize(index, reports)
    assert s["episodes"] == 4 and sorted(s["class_iou"]) == ["1", "2", "3", "4"]
    assert s["class_iou"]["1"] == 1.0 and s["class_iou"]["2"] < 1.0
    want = {c: inter[c] / union[c] for c in inter}
    assert s["class_iou"] == pytest.approx(want)
    assert s["miou"] == pytest.approx(np.mean(list(want.values())))
    fg = sum(inter.values()) / sum(union.values())
    assert s["fb_iou"] == pytest.approx((fg + bg[0] / bg[1]) / 2)


# --- PASCAL-5i, FSSAM's protocol ------------------------------------------------------


def voc_labels(k):
    """Image k: class 1 always, class 2 on even k, class 7 (another fold) on k = 1, and
    a 255 ignore band around class 1."""
    lm = np.zeros((H, W), np.uint8)
    lm[4:12, 4:12] = 255
    lm[5:11, 5:11] = 1
    if k % 2 == 0:
        lm[14:20, 14 + k : 22 + k] = 2
    if k == 1:
        lm[16:22, 2:8] = 7
    return lm


def make_voc(root, n=6):
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClassAug").mkdir(parents=True)
    rng = np.random.default_rng(1)
    pairs = []
    for k in range(n):
        name = f"2007_00{k:04d}"
        cv2.imwrite(str(voc / "JPEGImages" / f"{name}.jpg"),
                    rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
        Image.fromarray(voc_labels(k), mode="L").save(voc / "SegmentationClassAug" / f"{name}.png")
        pairs.append((f"../data/VOCdevkit2012/VOC2012/JPEGImages/{name}.jpg",
                      f"../data/VOCdevkit2012/VOC2012/SegmentationClassAug/{name}.png"))
    lists = root / "lists" / "pascal" / "fss_list" / "val"
    lists.mkdir(parents=True)
    (lists / "data_list_0.txt").write_text("".join(f"{i} {l}\n" for i, l in pairs))
    per_class = {1: pairs, 2: [p for k, p in enumerate(pairs) if k % 2 == 0],
                 3: [], 4: [], 5: []}
    (lists / "sub_class_file_list_0.txt").write_text(str(per_class))
    return voc, lists


def test_pascal5i_episodes_follow_fssam_draws(tmp_path):
    import random

    from refseg_ros.eval.importers import pascal5i

    voc, lists = make_voc(tmp_path)
    eps = pascal5i.sample_episodes(voc, lists, 0, episodes=10)
    assert len(eps) == 10
    assert [e["query"][0].name for e in eps[:7]] == [f"2007_00{k:04d}.jpg"
                                                     for k in (0, 1, 2, 3, 4, 5, 0)]
    # Hand replay of SemData's calls: query 0 has fold classes [1, 2] -> randint(1, 2);
    # then the support loop's first draw is always redrawn.
    rng = random.Random(321)
    cls = [1, 2][rng.randint(1, 2) - 1]
    files = 6 if cls == 1 else 3  # class 2: images 0, 2, 4
    rng.randint(1, files)
    idx = rng.randint(1, files) - 1
    while idx == 0:  # the query itself is image 0 in both class lists
        idx = rng.randint(1, files) - 1
    assert eps[0]["class"] == cls
    assert eps[0]["supports"][0][0].name == f"2007_00{idx * (1 if cls == 1 else 2):04d}.jpg"
    # Query 1 holds class 1 and class 7 (fold 1): only class 1 counts.
    assert eps[1]["class"] == 1
    for e in eps:
        assert e["query"] not in e["supports"]
    two = pascal5i.sample_episodes(voc, lists, 0, episodes=10, shots=2)
    for e in two:
        assert len(set(e["supports"])) == 2 and e["query"] not in e["supports"]
    assert eps == pascal5i.sample_episodes(voc, lists, 0, episodes=10)


def test_pascal5i_layout_errors(tmp_path):
    from refseg_ros.eval.importers import pascal5i

    voc, lists = make_voc(tmp_path)
    with pytest.raises(ValueError, match="fold must be 0, 1, 2 or 3, got 4"):
        pascal5i.sample_episodes(voc, lists, 4)
    with pytest.raises(FileNotFoundError, match="data list .*data_list_1.txt"):
        pascal5i.sample_episodes(voc, lists, 1)
    (voc / "SegmentationClassAug" / "2007_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="label .*SegmentationClassAug/2007_000002.png"):
        pascal5i.build(voc, lists, tmp_path / "out", fold=0, episodes=4)
    assert not (tmp_path / "out").exists()


def test_episode_accumulator_leaves_ignored_pixels_out():
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:3] = True  # 4 pixels
    pred = gt.copy()
    pred[0, :] = True  # 5 more pixels, all in the ignored row
    valid = np.ones((4, 5), bool)
    valid[0, :] = False
    acc = metrics.EpisodeAccumulator()
    assert acc.add("c", pred, gt, valid) == 1.0
    # Foreground 4/4; background: 11 valid pixels outside the object, all right.
    assert (acc.bg_inter, acc.bg_union) == (11, 11) and acc.fb_iou() == 1.0
    plain = metrics.EpisodeAccumulator()
    assert plain.add("c", pred, gt) == pytest.approx(4 / 9)


def test_pascal5i_scoring_ignores_255(tmp_path, capsys):
    voc, lists = make_voc(tmp_path)
    rc = cli.main(["build", "pascal5i", str(voc), str(tmp_path / "out"), "--lists", str(lists),
                   "--fold", "0", "--episodes", "4"])
    assert rc == 0
    index = read_index(capsys.readouterr().out.strip())
    assert index["protocol"]["ignore_label"] == 255 and index["protocol"]["seed"] == 321
    assert index["protocol"]["classes"] == ["aeroplane", "bicycle", "bird", "boat", "bottle"]
    entry = index["bags"][0]
    with bags.BagReader(entry["bag"]) as r:
        assert r.ignore_label() == 255
        gt = next(iter(dict(r.label_maps()).values()))
    assert entry["ignore_pixels"] == int((gt == 255).sum()) == 64 - 36

    def with_ignored(m, lm, i, p):
        """The object plus every ignored pixel; class 'bicycle' loses half its object."""
        m = m | (lm == 255)
        if p.label == "bicycle":
            m[:, : W // 2] = False
        return m

    reports = {}
    for entry in index["bags"]:
        out = tmp_path / "runs" / entry["name"]
        runner.evaluate(runner.RunConfig(bag=entry["bag"], out=out, progress=False,
                                         **run_options(index)), source=GroundTruthSource(with_ignored))
        reports[entry["name"]] = json.loads((out / "report.json").read_text())
    s = summarize(index, reports)
    for name, rep in reports.items():
        cls = next(e["class"] for e in index["bags"] if e["name"] == name)
        if cls == "aeroplane":  # predictions on ignored pixels cost nothing
            assert rep["frames"][0]["j"] == 1.0
        # The run's own mIoU/FB-IoU (one episode) equal the index rule's sums.
        one = summarize({**index, "bags": [e for e in index["bags"] if e["name"] == name]},
                        {name: rep})
        assert one["miou"] == pytest.approx(rep["oneshot"]["miou"])
        assert one["fb_iou"] == pytest.approx(rep["oneshot"]["fb_iou"])
    # Seed 321 draws bicycle for episode 0, aeroplane for the rest.
    assert [e["class"] for e in index["bags"]] == ["bicycle"] + ["aeroplane"] * 3
    assert s["class_iou"]["aeroplane"] == 1.0 and 0 < s["class_iou"]["bicycle"] < 1.0
    assert s["miou"] == pytest.approx((1.0 + s["class_iou"]["bicycle"]) / 2)


def test_coco20i_fwb_split_and_layout(tmp_path, capsys):
    from refseg_ros.eval.importers import pascal5i

    assert pascal5i.fold_classes(0, "coco") == list(range(1, 78, 4))
    assert pascal5i.fold_classes(3, "coco") == list(range(4, 81, 4))
    coco = tmp_path / "MSCOCO2014"
    (coco / "val2014").mkdir(parents=True)
    (coco / "annotations" / "val2014").mkdir(parents=True)
    rng = np.random.default_rng(2)
    pairs = []
    for k in range(4):
        name = f"COCO_val2014_{k:012d}"
        cv2.imwrite(str(coco / "val2014" / f"{name}.jpg"),
                    rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
        lm = np.zeros((H, W), np.uint8)
        lm[2:10, 2:10] = 5 if k % 2 else 1  # fold 0 classes
        lm[12:20, 12:20] = 2  # class 2 is in fold 1: never chosen for fold 0
        Image.fromarray(lm, mode="L").save(coco / "annotations" / "val2014" / f"{name}.png")
        pairs.append((f"../data/MSCOCO2014/val2014/{name}.jpg",
                      f"../data/MSCOCO2014/annotations/val2014/{name}.png"))
    lists = tmp_path / "lists" / "coco" / "fss_list" / "val"
    lists.mkdir(parents=True)
    (lists / "data_list_0.txt").write_text("".join(f"{i} {l}\n" for i, l in pairs))
    (lists / "sub_class_file_list_0.txt").write_text(str({1: pairs[0::2], 5: pairs[1::2]}))
    rc = cli.main(["build", "coco20i", str(coco), str(tmp_path / "out"), "--lists", str(lists),
                   "--fold", "0", "--episodes", "4"])
    assert rc == 0
    index = read_index(capsys.readouterr().out.strip())
    assert index["benchmark"] == "coco20i" and index["protocol"]["name"] == "COCO-20i"
    assert [e["class_id"] for e in index["bags"]] == [1, 5, 1, 5]
    assert index["bags"][1]["query"] == "val2014/COCO_val2014_000000000001.jpg"
    assert index["bags"][1]["supports"] == ["val2014/COCO_val2014_000000000003.jpg"]
    with bags.BagReader(index["bags"][0]["bag"]) as r:
        gt = next(iter(dict(r.label_maps()).values()))
    assert sorted(np.unique(gt).tolist()) == [0, 1]  # class 2 is background here


def test_index_errors(tmp_path):
    from refseg_ros.eval.importers import index as index_mod

    with pytest.raises(FileNotFoundError, match="no benchmark index .*index.json"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other", "bags": []}))
    with pytest.raises(ValueError, match="not a refseg-eval index"):
        read_index(tmp_path)
    with pytest.raises(ValueError, match="protocol summary must be one of"):
        index_mod.write_index(tmp_path, "x", {"summary": "median"}, [])
