"""DAVIS 2017 semi-supervised -> one video bag per sequence and ``index.json``.

Layout read (as the official toolkit, davisvideochallenge/davis2017-evaluation,
``davis2017/davis.py``, reads it)::

    DATA_DIR/ImageSets/2017/<split>.txt            one sequence name a line
    DATA_DIR/JPEGImages/<resolution>/<seq>/*.jpg   frames (resolution: 480p by default)
    DATA_DIR/Annotations/<resolution>/<seq>/*.png  palette label maps, 255 = void

Protocol (the toolkit's ``DAVISEvaluation.evaluate`` for ``semi-supervised``), recorded
in the index and carried by the bags so that ``refseg-eval run`` scores it:

- objects are the ids 1..max of the first annotation; each is prompted with its mask on
  the first frame (``--prompt first-frame-gt``); larger ids of later frames are
  background (the toolkit never scores them);
- the first and the last annotated frames are not scored (the toolkit slices
  ``[1:-1]``): the first is the prompt, the last is written without ground truth;
- void pixels (255) are background: semi-supervised evaluation passes no void mask;
- a frame's result is one label map (``--overlaps label-map``), as the toolkit reads PNGs;
- every object is scored on every scored frame, an absent one too (both empty: J = F = 1);
- J&F: mean over all (sequence, object) rows of J and F means (index rule
  ``mean-over-objects``); decay with the toolkit's four overlapping bins.

Errors: FileNotFoundError naming the missing list, folder or first-frame annotation;
ValueError naming a frame/annotation pair of different sizes or an empty first frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.eval.builders import read_label_png, read_rgb
from refseg_ros.eval.importers.index import write_index

VOID = 255
PROTOCOL = {
    "name": "DAVIS 2017 semi-supervised",
    "toolkit": "davisvideochallenge/davis2017-evaluation",
    "prompt": "first-frame-gt",
    "overlaps": "label-map",
    "objects": "ids 1..max of the first annotation",
    "scored_frames": "annotated frames except the first and the last",
    "void": "255 is background (no void mask in semi-supervised)",
    "bound_th": 0.008,
    "metric": "J&F",
    "summary": "mean-over-objects",
}


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"DAVIS 2017 layout: missing {what} {path}")
    return path


def read_split(data_dir: Path, split: str) -> list[str]:
    """Sequence names of ``ImageSets/2017/<split>.txt`` in file order."""
    lst = _need(data_dir / "ImageSets" / "2017" / f"{split}.txt", "sequence list")
    return [line.strip() for line in lst.read_text().splitlines() if line.strip()]


def sequence_to_bag(data_dir: Path, seq: str, out: Path, *, resolution: str = "480p",
                    storage: str = "mcap", fps: float = 24.0, start_ns: int = 1_000_000_000,
                    overwrite: bool = False) -> dict[str, Any]:
    """Write one sequence's bag at ``out``; returns its index entry (without ``path``)."""
    img_dir = _need(data_dir / "JPEGImages" / resolution / seq, "frame folder")
    ann_dir = _need(data_dir / "Annotations" / resolution / seq, "annotation folder")
    frames = sorted(img_dir.glob("*.jpg"))
    if not frames:
        raise FileNotFoundError(f"DAVIS 2017 layout: no frames (*.jpg) in {img_dir}")
    annotations = sorted(ann_dir.glob("*.png"))
    first = ann_dir / f"{frames[0].stem}.png"
    _need(first, "first-frame annotation")
    by_stem = {p.stem: p for p in annotations}
    # The toolkit scores annotations [1:-1]: the last annotated frame gets no ground truth.
    last_stem = annotations[-1].stem if len(annotations) > 1 else None
    num_objects = 0
    absent: list[int] = []
    scored = 0
    with bags.BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        writer.set_protocol("video")
        for i, path in enumerate(frames):
            stamp = start_ns + int(round(i * 1e9 / fps))
            image = read_rgb(path)
            writer.write_image(bags.CAMERA_TOPIC, stamp, image)
            ann = by_stem.get(path.stem)
            if ann is None or path.stem == last_stem:
                continue
            lm = read_label_png(ann).astype(np.uint16)
            if lm.shape != image.shape[:2]:
                raise ValueError(f"annotation {ann} is {lm.shape[1]}x{lm.shape[0]} but frame "
                                 f"{path} is {image.shape[1]}x{image.shape[0]}")
            lm[lm == VOID] = 0
            if i == 0:
                num_objects = int(lm.max())
                if num_objects == 0:
                    raise ValueError(f"first-frame annotation {ann} holds no object")
                absent = [k for k in range(1, num_objects + 1) if not (lm == k).any()]
            else:
                scored += 1
            lm[lm > num_objects] = 0
            writer.write_label_map(bags.GROUND_TRUTH_TOPIC, stamp, lm.astype(np.uint8))
        objects = {k: f"{seq} {k}" for k in range(1, num_objects + 1)}
        writer.set_objects(objects)
    entry: dict[str, Any] = {"name": seq, "storage": storage, "frames": len(frames),
                             "scored_frames": scored,
                             "objects": {str(k): v for k, v in objects.items()}}
    if absent:  # prompted where they first appear; the toolkit expects them from frame 1
        entry["absent_in_first_frame"] = absent
    return entry


def build(data_dir: str | Path, out: str | Path, *, split: str = "val",
          resolution: str = "480p", sequences: Optional[Sequence[str]] = None,
          storage: str = "mcap", fps: float = 24.0, overwrite: bool = False) -> Path:
    """Write ``out/bags/<seq>`` for each sequence of the split (or ``sequences``) and
    ``out/index.json``; returns the index path. The layout is checked before any bag."""
    data_dir, out = Path(data_dir), Path(out)
    _need(data_dir, "DAVIS folder")
    names = list(sequences) if sequences else read_split(data_dir, split)
    for seq in names:  # fail before writing anything
        _need(data_dir / "JPEGImages" / resolution / seq, "frame folder")
        _need(data_dir / "Annotations" / resolution / seq, "annotation folder")
    entries = []
    for seq in names:
        rel = Path("bags") / seq
        entry = sequence_to_bag(data_dir, seq, out / rel, resolution=resolution,
                                storage=storage, fps=fps, overwrite=overwrite)
        entries.append({"path": str(rel), **entry})
    return write_index(out, "davis2017", dict(PROTOCOL), entries, split=split,
                       resolution=resolution, data_dir=str(data_dir.resolve()))
