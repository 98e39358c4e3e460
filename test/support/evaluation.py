"""Evaluation helpers shared by the eval tests: a result source that answers with the
ground truth, and a miniature Ref-YouTube-VOS layout written on the fly.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
from PIL import Image

from refseg_ros.eval import builders, runner
from refseg_ros.eval.sources import FrameResult

H, W = 24, 32  # the miniature layouts' frame size


def palette_png(path, labels):
    """Write a label map as a palette PNG with the DAVIS / VOC palette."""
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = []
    for rgb, _ in sorted(builders._voc_palette().items(), key=lambda kv: kv[1]):
        pal.extend(rgb)
    im.putpalette(pal)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def frames_folder(root, vid, n=3, seed=0):
    """`n` random H x W JPEG frames in root/vid, named as Ref-YouTube-VOS names every 5th frame; their names."""
    rng = np.random.default_rng(seed)
    (root / vid).mkdir(parents=True, exist_ok=True)
    names = [f"{5 * i:05d}" for i in range(n)]  # Ref-YouTube-VOS lists every 5th frame
    for name in names:
        cv2.imwrite(str(root / vid / f"{name}.jpg"),
                    rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8))
    return names


def two_objects(i):
    """Frame i's label map (H x W uint8): object 1 a moving box, object 2 out of view on frame 1."""
    lm = np.zeros((H, W), np.uint8)
    lm[2 + i : 9 + i, 2:10] = 1
    if i != 1:  # object 2 out of view on frame 1
        lm[12:20, 14:26] = 2
    return lm


def make_ytvos_layout(root, split, exps, annotate=True, void=False):
    """Ref-YouTube-VOS / ReferFormer's Ref-DAVIS layout: one video 'v1', 3 frames;
    ``void``: a 255 band on the right (DAVIS annotations)."""
    names = frames_folder(root / split / "JPEGImages", "v1")
    if annotate:
        for i, name in enumerate(names):
            lm = two_objects(i)
            if void:
                lm[:, 30:] = 255
            palette_png(root / split / "Annotations" / "v1" / f"{name}.png", lm)
    meta = {"videos": {"v1": {"expressions": {str(k): e for k, e in enumerate(exps)},
                              "frames": names}}}
    (root / "meta_expressions" / split).mkdir(parents=True)
    (root / "meta_expressions" / split / "meta_expressions.json").write_text(json.dumps(meta))
    return names


class OracleSource:
    """Returns each taught target's ground truth; ``spoil(frame, target)`` may empty it;
    ``fail_after`` raises after that many results (an interrupted run)."""

    def __init__(self, spoil=None, fail_after=None, offset=0):
        self.spoil = spoil or (lambda i, t: False)
        self.fail_after = fail_after
        self.offset = offset
        self.calls = []

    def info(self):
        return {"kind": "oracle", "random_weights": False}

    def timing_label(self):
        return "oracle time"

    def results(self, plan_, reader, camera_topic, skip):
        gts = dict(reader.label_maps())
        index_of = plan_.index_of_stamp()
        n = 0
        for ep in plan_.episodes:
            if ep.index in skip:
                continue
            self.calls.append(ep.index)
            for i in ep.frames:
                stamp = plan_.frame_stamps[i]
                lm = gts.get(stamp)
                masks = {}
                for p in ep.prompts:
                    if p.stamp_ns <= stamp:
                        m = (lm == p.target_id) if lm is not None else np.zeros((1, 1), bool)
                        if self.spoil(i, p.target_id):
                            m = np.zeros_like(m)
                        masks[p.target_id] = np.roll(m, self.offset, axis=1)
                if self.fail_after is not None and n == self.fail_after:
                    raise KeyboardInterrupt
                n += 1
                assert index_of[stamp] == i
                yield FrameResult(stamp, ep.index, masks, {k: 1.0 for k in masks},
                                  {k: "tracked" for k in masks}, 0.001 * (i + 1))


def cfg(bag, out, **kw):
    """A RunConfig for `bag` into `out`, without a progress bar."""
    return runner.RunConfig(bag=bag, out=out, progress=False, **kw)
