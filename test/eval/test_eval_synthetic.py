"""The synthetic scene: deterministic, exact masks, and the occlusion/exit events."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refseg_ros.eval import synthetic


@pytest.fixture(scope="module")
def seq():
    return synthetic.generate(num_frames=20, height=96, width=128, seed=3)


def test_shapes_and_types(seq):
    assert len(seq) == 20 and len(seq.masks) == 20
    for frame, masks in zip(seq.frames, seq.masks):
        assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
        assert sorted(masks) == [1, 2, 3]
        assert all(m.shape == (96, 128) and m.dtype == bool for m in masks.values())
    assert [o.label for o in seq.objects] == ["red disc", "blue square", "green triangle"]
    assert seq.stamp_ns(0) == seq.start_ns and seq.stamp_ns(10) - seq.stamp_ns(9) == 100_000_000


def test_deterministic_and_seeded(seq):
    again = synthetic.generate(num_frames=20, height=96, width=128, seed=3)
    other = synthetic.generate(num_frames=20, height=96, width=128, seed=4)
    for i in range(20):
        np.testing.assert_array_equal(again.frames[i], seq.frames[i])
        assert not np.array_equal(other.frames[i], seq.frames[i])
        for oid in (1, 2, 3):  # paths do not depend on the seed
            np.testing.assert_array_equal(other.masks[i][oid], seq.masks[i][oid])


def test_masks_are_disjoint_and_match_label_map(seq):
    for i in range(len(seq)):
        stack = np.stack([seq.masks[i][k] for k in (1, 2, 3)])
        assert stack.sum(0).max() <= 1
        lm = seq.label_map(i)
        for k in (1, 2, 3):
            np.testing.assert_array_equal(lm == k, seq.masks[i][k])


def test_masks_are_the_painted_pixels(seq):
    # Object pixels carry the object's colour; its dominant channel wins everywhere.
    for i in (0, 7, 19):
        frame = seq.frames[i].astype(int)
        for obj in seq.objects:
            m = seq.masks[i][obj.object_id]
            if m.any():
                channel = int(np.argmax(obj.color))
                assert (frame[m].argmax(1) == channel).mean() > 0.99


def test_disc_fully_occluded_in_the_middle(seq):
    disc_area = [int(m[1].sum()) for m in seq.masks]
    hidden = [i for i, a in enumerate(disc_area) if a == 0]
    assert hidden, "the disc is never fully hidden"
    assert disc_area[0] > 0 and disc_area[-1] > 0
    for i in hidden:  # hidden behind the square, not gone
        assert seq.amodal[i][1].any()
        assert not (seq.amodal[i][1] & ~seq.amodal[i][2]).any()


def test_triangle_leaves_and_comes_back(seq):
    present = [bool(m[3].any()) for m in seq.masks]
    assert present[0]
    gone = present.index(False)
    assert True in present[gone:], "the triangle never comes back"


def test_triangle_area_is_exact_enough():
    s = synthetic.generate(num_frames=1, height=240, width=320)
    r = synthetic.object_sizes(240, 320)[3]
    area = s.amodal[0][3].sum()
    assert area == pytest.approx(3 * math.sqrt(3) / 4 * r * r, rel=0.03)


def test_reference_view():
    ref = synthetic.render_reference(1, height=96, width=128, seed=3)
    assert ref.image.shape == (96, 128, 3) and ref.mask.dtype == bool
    assert ref.label == "red disc" and ref.mask.sum() > 100
    seq = synthetic.generate(num_frames=1, height=96, width=128, seed=3)
    bg = ~ref.mask & ~seq.amodal[0][1]
    assert np.abs(ref.image[bg].astype(int) - seq.frames[0][bg].astype(int)).mean() > 10
    with pytest.raises(KeyError):
        synthetic.render_reference(9)


def test_bad_arguments():
    with pytest.raises(ValueError):
        synthetic.generate(num_frames=0)
    with pytest.raises(ValueError):
        synthetic.generate(height=8, width=8)


def test_streamed_frames_equal_the_whole_clip(seq):
    for f in synthetic.iter_frames(num_frames=20, height=96, width=128, seed=3):
        np.testing.assert_array_equal(f.image, seq.frames[f.index])
        np.testing.assert_array_equal(synthetic.label_map(f.masks), seq.label_map(f.index))
