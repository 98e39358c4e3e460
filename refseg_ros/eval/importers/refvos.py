"""Referring video object segmentation -> one bag per expression and ``index.json``.

Every bag holds the video's frames, the expression on the caption topic (stamped 1 ms
before the first frame) and, where the split has annotations, a ground-truth label map
on every listed frame: 1 = the referred object(s), 0 = everything else (objects
{1: expression}, protocol ``video``). Scoring follows each benchmark's evaluation: J and
F of the expression's mask on every frame (an absent object, predicted absent, scores
1), J&F per expression, then the mean over expressions (index rule
``mean-over-objects``: one object per bag).

Layouts read:

``ref-youtube-vos`` (the Ref-YouTube-VOS release, as ReferFormer's ``datasets/ytvos.py``
reads it)::

    DATA/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": str, "obj_id": "1"}}, "frames": [...]}}}
    DATA/<split>/JPEGImages/<vid>/<frame>.jpg
    DATA/<split>/Annotations/<vid>/<frame>.png   palette, object ids (not in valid/test:
                                                 those splits are scored by the server)

``ref-davis`` (Ref-DAVIS 2017 converted to that layout by ReferFormer's
``tools/data/convert_davis_to_ytvos.py``; expressions ordered object by object, four per
object: annotator 1 first-frame, annotator 1 full-video, annotator 2 first-frame,
annotator 2 full-video, so annotator = expression index mod 4)::

    DATA/meta_expressions/<split>/meta_expressions.json
    DATA/<split>/JPEGImages/<vid>/<frame>.jpg
    DATA/<split>/Annotations/<vid>/<frame>.png   DAVIS Annotations_unsupervised/480p

    Scored as ReferFormer's ``eval_davis.py`` (the DAVIS toolkit, task ``unsupervised``:
    every frame, no [1:-1] slice) per annotator, then averaged over the four annotators,
    which equals the mean over expressions since every annotator describes every object.
    Void pixels (255) stay 255 and the bag names 255 its ignore label, so that J and F
    leave them out as the toolkit does. Not reproduced: the toolkit's Hungarian matching
    of result ids to objects (identity here).

``mevis`` (the MeViS release, as its ``lmpm/data/datasets/mevis.py`` reads it)::

    DATA/<split>/meta_expressions.json
        {"videos": {vid: {"expressions": {"0": {"exp": str, "obj_id": [..], "anno_id": [..]}},
                          "frames": [...]}}}
    DATA/<split>/JPEGImages/<vid>/<frame>.jpg
    DATA/<split>/mask_dict.json   {anno_id: [RLE or null per frame]} (train, valid_u;
                                  the valid split has none: scored by the server)

    The expression's mask is the union of its anno_ids' masks on each frame.

Errors: FileNotFoundError naming the missing meta_expressions.json, frame folder, frame,
annotation or mask_dict.json; ValueError naming the video and expression whose
annotation is missing (no obj_id/anno_id) or of another size than its frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.eval.builders import read_label_png, read_rgb
from refseg_ros.eval.importers import rle
from refseg_ros.eval.importers.index import write_index

BENCHMARKS = ("ref-youtube-vos", "ref-davis", "mevis")
VOID = 255
UNANNOTATED_SPLITS = {"ref-youtube-vos": ("valid", "test"), "ref-davis": (), "mevis": ("valid",)}
DEFAULT_SPLIT = {"ref-youtube-vos": "valid", "ref-davis": "valid", "mevis": "valid_u"}


def protocol(benchmark: str, annotated: bool) -> dict[str, Any]:
    base = {"prompt": "caption", "overlaps": "keep", "metric": "J&F", "bound_th": 0.008,
            "scored_frames": "every listed frame" if annotated else "none (server)",
            "summary": "mean-over-objects", "episode": "one expression"}
    return base | {
        "ref-youtube-vos": {"name": "Ref-YouTube-VOS", "toolkit": "CodaLab server (J&F per "
                            "expression over its frames, mean over expressions)"},
        "ref-davis": {"name": "Ref-DAVIS 2017", "toolkit": "davis2017-evaluation, task "
                      "unsupervised, per annotator (ReferFormer eval_davis.py), mean over "
                      "the 4 annotators", "annotators": 4,
                      "ignore_label": VOID,
                      "not_reproduced": "Hungarian id matching (identity here)"},
        "mevis": {"name": "MeViS", "toolkit": "MeViS eval (db_eval_iou/db_eval_boundary per "
                  "expression over all frames, mean over expressions)",
                  "target": "union of the expression's anno_id masks"},
    }[benchmark]


def _need(path: Path, what: str, benchmark: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{benchmark} layout: missing {what} {path}")
    return path


def _meta_path(data_dir: Path, benchmark: str, split: str) -> Path:
    if benchmark == "mevis":
        return data_dir / split / "meta_expressions.json"
    return data_dir / "meta_expressions" / split / "meta_expressions.json"


class _Truth:
    """The expression's ground truth per frame (None: the split has none)."""

    def __init__(self, data_dir: Path, benchmark: str, split: str) -> None:
        self.benchmark = benchmark
        self.annotated = split not in UNANNOTATED_SPLITS[benchmark]
        self.ann_root = data_dir / split / "Annotations"
        self.mask_dict: Optional[dict[str, Any]] = None
        if self.annotated and benchmark == "mevis":
            path = _need(data_dir / split / "mask_dict.json", "mask file", benchmark)
            self.mask_dict = json.loads(path.read_text())
        elif self.annotated:
            _need(self.ann_root, "annotation folder", benchmark)

    def mask(self, vid: str, exp_id: str, exp: dict[str, Any], index: int, frame: str,
             shape: tuple[int, int]) -> Optional[np.ndarray]:
        """uint8 ground truth: 1 referred, 0 not, 255 void (ref-davis); None: no masks."""
        if not self.annotated:
            return None
        where = f"video {vid!r} expression {exp_id}"
        if self.mask_dict is not None:
            if "anno_id" not in exp:
                raise ValueError(f"mevis: {where} has no anno_id")
            out = np.zeros(shape, bool)
            for aid in exp["anno_id"]:
                if str(aid) not in self.mask_dict:
                    raise ValueError(f"mevis: {where}: anno_id {aid} is not in mask_dict.json")
                runs = self.mask_dict[str(aid)]
                entry = runs[index] if index < len(runs) else None
                if entry:
                    m = rle.decode(entry)
                    if m.shape != shape:
                        raise ValueError(f"mevis: {where}: anno_id {aid} frame {frame} is "
                                         f"{m.shape[1]}x{m.shape[0]}, the frame "
                                         f"{shape[1]}x{shape[0]}")
                    out |= m
            return out.astype(np.uint8)
        if "obj_id" not in exp:
            raise ValueError(f"{self.benchmark}: {where} has no obj_id")
        path = _need(self.ann_root / vid / f"{frame}.png", "annotation", self.benchmark)
        lm = read_label_png(path)
        if lm.shape != shape:
            raise ValueError(f"annotation {path} is {lm.shape[1]}x{lm.shape[0]}, the frame "
                             f"{shape[1]}x{shape[0]}")
        out = (lm == int(exp["obj_id"])).astype(np.uint8)
        if self.benchmark == "ref-davis":
            out[lm == VOID] = VOID  # void: left out of J and F by the DAVIS toolkit
        return out


def build(benchmark: str, data_dir: str | Path, out: str | Path, *, split: Optional[str] = None,
          videos: Optional[Sequence[str]] = None, storage: str = "mcap", fps: float = 24.0,
          start_ns: int = 1_000_000_000, overwrite: bool = False) -> Path:
    """Write ``out/bags/<video>/<expression id>`` per expression and ``out/index.json``;
    returns the index path. The meta file and every frame are checked first."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    data_dir, out = Path(data_dir), Path(out)
    split = split or DEFAULT_SPLIT[benchmark]
    meta = json.loads(_need(_meta_path(data_dir, benchmark, split), "expression file",
                            benchmark).read_text())
    all_videos = meta.get("videos")
    if not isinstance(all_videos, dict):
        raise ValueError(f"{_meta_path(data_dir, benchmark, split)} has no 'videos' object")
    names = list(videos) if videos else sorted(all_videos)
    img_root = data_dir / split / "JPEGImages"
    for vid in names:
        if vid not in all_videos:
            raise ValueError(f"video {vid!r} is not in {_meta_path(data_dir, benchmark, split)}")
        for frame in all_videos[vid]["frames"]:
            _need(img_root / vid / f"{frame}.jpg", "frame", benchmark)
    truth = _Truth(data_dir, benchmark, split)
    entries = []
    for vid in names:
        video = all_videos[vid]
        frames = list(video["frames"])
        images = [read_rgb(img_root / vid / f"{f}.jpg") for f in frames]
        stamps = [start_ns + int(round(i * 1e9 / fps)) for i in range(len(frames))]
        for k, (exp_id, exp) in enumerate(video["expressions"].items()):
            rel = Path("bags") / vid / str(exp_id)
            scored = 0
            with bags.BagWriter(out / rel, storage=storage, overwrite=overwrite) as writer:
                writer.set_protocol("video")
                writer.set_objects({1: exp["exp"]})
                if benchmark == "ref-davis":
                    writer.set_ignore_label(VOID)
                writer.write_caption(bags.CAPTION_TOPIC, stamps[0] - 1_000_000, exp["exp"])
                for i, (frame, image) in enumerate(zip(frames, images)):
                    writer.write_image(bags.CAMERA_TOPIC, stamps[i], image)
                    m = truth.mask(vid, str(exp_id), exp, i, frame, image.shape[:2])
                    if m is not None:
                        writer.write_label_map(bags.GROUND_TRUTH_TOPIC, stamps[i], m)
                        scored += 1
            entry: dict[str, Any] = {"name": f"{vid}_{exp_id}", "path": str(rel),
                                     "video": vid, "expression_id": str(exp_id),
                                     "caption": exp["exp"], "storage": storage,
                                     "frames": len(frames), "scored_frames": scored,
                                     "objects": {"1": exp["exp"]}}
            if benchmark == "ref-davis":
                entry["annotator"] = k % 4
            for key in ("obj_id", "anno_id"):
                if key in exp:
                    entry[key] = exp[key]
            entries.append(entry)
    return write_index(out, benchmark, protocol(benchmark, truth.annotated), entries,
                       split=split, data_dir=str(data_dir.resolve()))
