"""Turn datasets into evaluation bags, so every benchmark runs through the same bag path
as a recording from a robot.

- :func:`davis_to_bag`: a DAVIS-style video (JPEGImages/<seq>/*.jpg and
  Annotations/<seq>/*.png) -> frames plus label-map ground truth (video protocol);
- :func:`fss_to_bag`: FSS-1000-style one-shot pairs (<class>/<n>.jpg, <class>/<n>.png)
  -> episodes of reference message, query frame and query ground truth (one-shot);
- :func:`synthetic_to_bag`: the synthetic scene -> frames, ground truth, a reference
  per object and a caption per object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from refseg_ros import imaging
from refseg_ros.eval import bags, synthetic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_rgb(path: Path) -> np.ndarray:
    """An image file as H x W x 3 uint8 RGB (imaging.read_image_file: the node's rule for
    every encoding); ValueError naming the file when it is not readable."""
    return imaging.read_image_file(path)


def _voc_palette() -> dict[tuple[int, int, int], int]:
    """The PASCAL VOC / DAVIS colour of each label index (bit-interleaved colour map)."""
    out = {}
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.setdefault((r, g, b), i)
    return out


def read_label_png(path: Path) -> np.ndarray:
    """An annotation PNG as a 2-D uint8/uint16 label map.

    Palette PNGs (DAVIS 2017) give their indices; greyscale PNGs give their values,
    except binary 0/255 masks (DAVIS 2016, FSS-1000), which become 0/1; RGB PNGs
    drawn with the DAVIS palette are mapped back to indices. OpenCV would expand a
    palette to colours, so Pillow reads these files.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L", "I;16", "I"):
                arr = np.array(im)
            else:
                arr = np.array(im.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot read annotation {path}: {exc}") from exc
    if arr.ndim == 2:
        if mode == "L" and set(np.unique(arr).tolist()) <= {0, 255}:
            return (arr == 255).astype(np.uint8)
        if arr.dtype not in (np.uint8, np.uint16):
            arr = arr.astype(np.uint16)
        return arr
    palette = _voc_palette()
    colours, inverse = np.unique(arr.reshape(-1, 3), axis=0, return_inverse=True)
    ids = []
    for c in colours:
        key = tuple(int(v) for v in c)
        if key not in palette:
            raise ValueError(f"annotation {path} has colour {key}, which is not a DAVIS "
                             "palette colour; save it as a palette or greyscale PNG")
        ids.append(palette[key])
    return np.asarray(ids, np.uint8)[inverse.reshape(-1)].reshape(arr.shape[:2])


def _find_dir(root: Path, kind: str, sequence: str) -> Path:
    for cand in (root / kind / sequence, root / kind / "480p" / sequence):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no {kind} folder for sequence {sequence!r} under {root} "
                            f"(looked for {root / kind / sequence})")


def davis_to_bag(root: str | Path, sequence: str, out: str | Path, *, storage: str = "mcap",
                 fps: float = 24.0, start_ns: int = 1_000_000_000,
                 camera_topic: str = bags.CAMERA_TOPIC,
                 gt_topic: str = bags.GROUND_TRUTH_TOPIC, max_frames: Optional[int] = None,
                 labels: Optional[dict[int, str]] = None, overwrite: bool = False) -> Path:
    """Write one DAVIS-style sequence as a video-protocol bag.

    Frames are taken in file-name order and stamped ``start_ns + i / fps``; a frame
    without an annotation of the same name gets no ground truth (sparse annotation).
    """
    root = Path(root)
    frame_dir = _find_dir(root, "JPEGImages", sequence)
    ann_dir = _find_dir(root, "Annotations", sequence)
    frames = sorted(p for p in frame_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if max_frames is not None:
        frames = frames[:max_frames]
    if not frames:
        raise ValueError(f"no frames in {frame_dir}")
    annotations = {p.stem: p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"}
    if not any(f.stem in annotations for f in frames):
        raise ValueError(f"no annotation in {ann_dir} matches a frame of {frame_dir}")
    ids: set[int] = set()
    with bags.BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        writer.set_protocol("video")
        for i, path in enumerate(frames):
            stamp = start_ns + int(round(i * 1e9 / fps))
            image = read_rgb(path)
            writer.write_image(camera_topic, stamp, image)
            ann = annotations.get(path.stem)
            if ann is None:
                continue
            lm = read_label_png(ann)
            if lm.shape != image.shape[:2]:
                raise ValueError(f"annotation {ann} is {lm.shape[1]}x{lm.shape[0]} but frame "
                                 f"{path} is {image.shape[1]}x{image.shape[0]}")
            ids.update(int(v) for v in np.unique(lm) if v != 0)
            writer.write_label_map(gt_topic, stamp, lm)
        names = labels or {}
        writer.set_objects({k: names.get(k, f"{sequence} {k}") for k in sorted(ids)})
    return Path(out)


@dataclass(frozen=True)
class Episode:
    """One few-shot episode: support (reference) pairs and a query pair of one class."""

    class_name: str
    supports: tuple[tuple[Path, Path], ...]  # (image, mask) each; k of them for k-shot
    query: tuple[Path, Path]


def fss_pairs(class_dir: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs of a class folder: N.jpg with N.png, in numeric/name order."""
    images = {p.stem: p for p in class_dir.iterdir()
              if p.suffix.lower() in (".jpg", ".jpeg")}
    masks = {p.stem: p for p in class_dir.iterdir() if p.suffix.lower() == ".png"}

    def order(stem: str) -> tuple[bool, int, str]:
        return (not stem.isdigit(), int(stem) if stem.isdigit() else 0, stem)

    stems = sorted(set(images) & set(masks), key=order)
    return [(images[s], masks[s]) for s in stems]


def plan_episodes(root: str | Path, episodes_per_class: int = 1, seed: int = 0,
                  classes: Optional[Sequence[str]] = None, shots: int = 1) -> list[Episode]:
    """Draw episodes reproducibly: per class, ``episodes_per_class`` draws of ``shots``
    supports and a query, all distinct images, classes in name order."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder {root}")
    names = sorted(classes) if classes else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"no class folders in {root}")
    rng = random.Random(seed)
    episodes = []
    for name in names:
        pairs = fss_pairs(root / name)
        if len(pairs) < shots + 1:
            raise ValueError(f"class folder {root / name} needs at least {shots + 1} image/mask pairs "
                             f"(N.jpg + N.png) for {shots}-shot episodes, found {len(pairs)}")
        for _ in range(episodes_per_class):
            *supports, query = rng.sample(pairs, shots + 1)
            episodes.append(Episode(name, tuple(supports), query))
    return episodes


def _binary_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = read_label_png(path)
    if m.shape != shape:
        raise ValueError(f"mask {path} is {m.shape[1]}x{m.shape[0]} but its image is "
                         f"{shape[1]}x{shape[0]}")
    return m != 0


def fss_to_bag(root: str | Path, out: str | Path, *, episodes_per_class: int = 1, seed: int = 0,
               classes: Optional[Sequence[str]] = None, shots: int = 1, storage: str = "mcap",
               start_ns: int = 1_000_000_000, camera_topic: str = bags.CAMERA_TOPIC,
               gt_topic: str = bags.GROUND_TRUTH_TOPIC,
               reference_topic: str = bags.REFERENCE_TOPIC, overwrite: bool = False) -> Path:
    """Write few-shot episodes as a bag: per episode, at second e, ``shots`` references
    (support images and masks, target id 1, label = class; the first teaches the target,
    the others add examples), then half a second later the query frame and its ground
    truth (1 = object)."""
    episodes = plan_episodes(root, episodes_per_class, seed, classes, shots)
    with bags.BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        writer.set_protocol("one-shot")
        writer.set_objects({1: "target"})
        for e, ep in enumerate(episodes):
            t_ref = start_ns + e * 1_000_000_000
            for k, (image_path, mask_path) in enumerate(ep.supports):
                s_img = read_rgb(image_path)
                writer.write_reference(reference_topic, t_ref, 1, ep.class_name, s_img,
                                       _binary_mask(mask_path, s_img.shape[:2]), camera=camera_topic,
                                       add_view=k > 0)
            t_query = t_ref + 500_000_000
            q_img = read_rgb(ep.query[0])
            q_mask = _binary_mask(ep.query[1], q_img.shape[:2])
            writer.write_image(camera_topic, t_query, q_img)
            writer.write_label_map(gt_topic, t_query, q_mask.astype(np.uint8))
    return Path(out)


def synthetic_to_bag(out: str | Path, *, num_frames: int = 30, height: int = 240,
                     width: int = 320, seed: int = 0, fps: float = 10.0,
                     storage: str = "mcap", references: bool = True, captions: bool = True,
                     camera_topic: str = bags.CAMERA_TOPIC,
                     gt_topic: str = bags.GROUND_TRUTH_TOPIC,
                     reference_topic: str = bags.REFERENCE_TOPIC,
                     caption_topic: str = bags.CAPTION_TOPIC, start_ns: int = 1_000_000_000,
                     overwrite: bool = False, depth: bool = False) -> Path:
    """Write the synthetic scene as a video-protocol bag.

    References (each object alone on another background) and captions are stamped
    just before the first frame, in object order, so a replay teaches before it tracks.
    ``depth``: also each frame's exact depth (32FC1 metres) and the scene camera's
    CameraInfo, stamped like the frame (refseg_ros.eval.depth topics), so that the report
    adds position errors.
    """
    synthetic.check_args(num_frames, height, width)
    objects = synthetic.OBJECTS

    def stamp(i: int) -> int:
        return synthetic.frame_stamp_ns(i, fps, start_ns)

    with bags.BagWriter(out, storage=storage, overwrite=overwrite) as writer:
        writer.set_protocol("video")
        writer.set_objects({o.object_id: o.label for o in objects})
        for k, obj in enumerate(objects):
            t = stamp(0) - (len(objects) - k) * 1_000_000
            if references:
                ref = synthetic.render_reference(obj.object_id, height, width, seed)
                writer.write_reference(reference_topic, t, obj.object_id, obj.label,
                                       ref.image, ref.mask, camera=camera_topic)
            if captions:
                writer.write_caption(caption_topic, t, obj.caption)
        for frame in synthetic.iter_frames(num_frames, height, width, seed):
            writer.write_image(camera_topic, stamp(frame.index), frame.image)
            writer.write_label_map(gt_topic, stamp(frame.index),
                                   synthetic.label_map(frame.masks))
            if depth:
                from refseg_ros.eval import depth as depth_io

                depth_io.write_camera_info(writer, depth_io.CAMERA_INFO_TOPIC, stamp(frame.index),
                                           synthetic.intrinsics(height, width), width, height)
                depth_io.write_depth(writer, depth_io.DEPTH_TOPIC, stamp(frame.index),
                                     synthetic.depth_map(frame.masks, height, width))
    return Path(out)
