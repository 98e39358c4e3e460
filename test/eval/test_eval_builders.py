"""Dataset folders -> evaluation bags: DAVIS-style video, FSS-style one-shot, synthetic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from refseg_ros.eval import bags, builders, synthetic


def palette_png(path, labels):
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = []
    for rgb in sorted(builders._voc_palette().items(), key=lambda kv: kv[1]):
        pal.extend(rgb[0])
    im.putpalette(pal)
    im.save(path)


def make_davis(root, seq="blobs", n=4, h=24, w=32, annotate=None):
    (root / "JPEGImages" / seq).mkdir(parents=True)
    (root / "Annotations" / seq).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = []
    for i in range(n):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / seq / f"{i:05d}.jpg"), img)
        lm = np.zeros((h, w), np.uint8)
        lm[2 + i : 10 + i, 3:12] = 1
        lm[12:20, 15 + i : 25 + i] = 2
        labels.append(lm)
        if annotate is None or i in annotate:
            palette_png(root / "Annotations" / seq / f"{i:05d}.png", lm)
    return labels


def test_read_label_png_variants(tmp_path):
    lm = np.zeros((5, 6), np.uint8)
    lm[1:3, 1:3] = 1
    lm[3:, 4:] = 3
    palette_png(tmp_path / "p.png", lm)
    np.testing.assert_array_equal(builders.read_label_png(tmp_path / "p.png"), lm)
    # An RGB rendering with the DAVIS colours maps back to the same ids.
    Image.open(tmp_path / "p.png").convert("RGB").save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(builders.read_label_png(tmp_path / "rgb.png"), lm)
    # A binary 0/255 mask becomes 0/1.
    Image.fromarray(((lm == 1) * 255).astype(np.uint8), mode="L").save(tmp_path / "b.png")
    np.testing.assert_array_equal(builders.read_label_png(tmp_path / "b.png"), lm == 1)
    bad = np.zeros((4, 4, 3), np.uint8)
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="bad.png.*not a DAVIS palette colour"):
        builders.read_label_png(tmp_path / "bad.png")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_davis_folder_to_bag(tmp_path, storage):
    labels = make_davis(tmp_path / "davis", annotate={0, 1, 3})
    out = builders.davis_to_bag(tmp_path / "davis", "blobs", tmp_path / "bag", storage=storage,
                                fps=10)
    with bags.BagReader(out) as r:
        assert r.protocol == "video"
        assert r.object_labels() == {1: "blobs 1", 2: "blobs 2"}
        frames = list(r.frames())
        assert len(frames) == 4
        assert frames[1].stamp_ns - frames[0].stamp_ns == 100_000_000
        for i, f in enumerate(frames):
            src = cv2.imread(str(tmp_path / "davis" / "JPEGImages" / "blobs" / f"{i:05d}.jpg"))
            assert f.image.tobytes() == src[:, :, ::-1].tobytes()
        gts = dict(r.label_maps())
        assert sorted(gts) == [frames[i].stamp_ns for i in (0, 1, 3)]  # frame 2 unannotated
        np.testing.assert_array_equal(gts[frames[3].stamp_ns], labels[3])
        idx = bags.index_sequence(r)
        assert idx.first_seen == {1: frames[0].stamp_ns, 2: frames[0].stamp_ns}


def test_davis_annotation_of_another_size(tmp_path):
    make_davis(tmp_path / "d")
    palette_png(tmp_path / "d" / "Annotations" / "blobs" / "00002.png", np.zeros((10, 10)))
    with pytest.raises(ValueError, match="00002.png is 10x10 but frame .*00002.jpg is 32x24"):
        builders.davis_to_bag(tmp_path / "d", "blobs", tmp_path / "bag")
    assert not (tmp_path / "bag").exists()


def test_davis_missing_sequence(tmp_path):
    make_davis(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="nope"):
        builders.davis_to_bag(tmp_path / "d", "nope", tmp_path / "bag")


def make_fss(root, classes=("cat", "cup"), n=3, size=(20, 24)):
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for k in range(1, n + 1):
            img = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            cv2.imwrite(str(root / c / f"{k}.jpg"), img)
            mask = np.zeros(size, np.uint8)
            mask[k : k + 8, 2 * k : 2 * k + 9] = 255
            cv2.imwrite(str(root / c / f"{k}.png"), mask)


def test_fss_folder_to_bag(tmp_path):
    make_fss(tmp_path / "fss")
    out = builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag", episodes_per_class=2, seed=5)
    plan = builders.plan_episodes(tmp_path / "fss", 2, seed=5)
    assert [e.class_name for e in plan] == ["cat", "cat", "cup", "cup"]
    assert all(len(e.supports) == 1 and e.supports[0] != e.query for e in plan)
    with bags.BagReader(out) as r:
        assert r.protocol == "one-shot"
        refs = list(r.references())
        frames = list(r.frames())
        gts = dict(r.label_maps())
    assert [x.label for x in refs] == ["cat", "cat", "cup", "cup"]
    assert len(frames) == 4 and len(gts) == 4
    for ep, ref, frame in zip(plan, refs, frames):
        assert ref.stamp_ns < frame.stamp_ns and ref.target_id == 1
        want = cv2.imread(str(ep.supports[0][1]), cv2.IMREAD_GRAYSCALE) > 0
        np.testing.assert_array_equal(ref.mask, want)
        want_q = (cv2.imread(str(ep.query[1]), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        np.testing.assert_array_equal(gts[frame.stamp_ns], want_q)


def test_fss_class_with_one_pair(tmp_path):
    make_fss(tmp_path / "fss", classes=("solo",), n=1)
    with pytest.raises(ValueError, match="solo needs at least 2"):
        builders.fss_to_bag(tmp_path / "fss", tmp_path / "bag")


def test_synthetic_to_bag(tmp_path):
    out = builders.synthetic_to_bag(tmp_path / "syn", num_frames=5, height=48, width=64,
                                    storage="sqlite3")
    with bags.BagReader(out) as r:
        refs = list(r.references())
        caps = list(r.captions())
        frames = list(r.frames())
        idx = bags.index_sequence(r)
    assert [x.target_id for x in refs] == [1, 2, 3]
    assert [c.text for c in caps] == ["the red disc", "the blue square", "the green triangle"]
    assert all(x.stamp_ns < frames[0].stamp_ns for x in refs)
    assert len(frames) == 5 and len(idx.gt_stamps) == 5
    assert idx.object_labels == {1: "red disc", 2: "blue square", 3: "green triangle"}
    seq = synthetic.generate(num_frames=5, height=48, width=64)
    assert [f.stamp_ns for f in frames] == [seq.stamp_ns(i) for i in range(5)]
    assert all(f.image.tobytes() == seq.frames[f.index].tobytes() for f in frames)
