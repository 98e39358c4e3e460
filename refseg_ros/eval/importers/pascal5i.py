"""PASCAL-5i and COCO-20i, FSSAM's protocol -> one one-shot bag per episode and
``index.json``.

Layouts read:

    pascal: DATA_DIR/JPEGImages/<name>.jpg            (the VOC2012 folder)
            DATA_DIR/SegmentationClassAug/<name>.png  class ids 0..20, 255 = ignore
    coco:   DATA_DIR/val2014/<name>.jpg               (the MSCOCO2014 folder)
            DATA_DIR/annotations/val2014/<name>.png   class ids 0..80, 255 = ignore
    LISTS/data_list_<fold>.txt             FSSAM lists/<pascal|coco>/fss_list/val/:
                                           "<image path> <label path>" per line
    LISTS/sub_class_file_list_<fold>.txt   {class id: [(image, label), ...]}

List paths (``../data/VOCdevkit2012/VOC2012/JPEGImages/x.jpg``) are resolved by what
follows their ``VOC2012`` / ``MSCOCO2014`` part, under DATA_DIR.

Protocol (Sam1224/FSSAM ``util/dataset.py`` SemData in ``val`` mode and ``test.py``):
PASCAL fold f tests classes 5f+1..5f+5, COCO fold f (``use_split_coco``, FWB) classes
f+1, f+5, ..., f+77; 1,000 episodes walk the data list in order (wrapping
round); each query takes one of its fold classes at random, and ``shots`` distinct
supports of that class other than the query (a first draw is always redrawn, as
SemData's loop does); Python's ``random`` seeded with ``seed`` (321) makes the draws.
The query is scored at its original size (``ori_resize``) with 255 left out
(``refseg.ignore_label``); mIoU = mean over the fold's 5 classes of summed intersections
/ summed unions; FB-IoU = mean of background and foreground IoU summed over episodes
(index rule ``episodes-miou-fbiou``).

Not reproduced: FSSAM's test.py loads with 32 DataLoader workers, each reseeded by
torch, so its exact draws depend on torch's worker seeding; these are the draws of a
single process (``workers=0``) after ``random.seed(seed)``.

Errors: FileNotFoundError naming a missing list, image or label; ValueError for a fold
outside 0..3 or a listed query without a class of its fold.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.eval.builders import read_rgb
from refseg_ros.eval.importers.index import write_index

ROOT_NAME = {"pascal": "VOC2012", "coco": "MSCOCO2014"}
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IGNORE = 255


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"PASCAL-5i/COCO-20i layout: missing {what} {path}")
    return path


def _local(data_dir: Path, listed: str, root_name: str) -> Path:
    parts = Path(listed.strip()).parts
    if root_name in parts:
        return data_dir.joinpath(*parts[parts.index(root_name) + 1:])
    return data_dir.joinpath(*parts[-2:])


def read_labels(path: Path) -> np.ndarray:
    """A SegmentationClassAug PNG as its raw 8-bit values."""
    from PIL import Image

    _need(path, "label")
    with Image.open(path) as im:
        arr = np.array(im if im.mode in ("L", "P") else im.convert("L"))
    return arr


def fold_classes(fold: int, dataset: str = "pascal") -> list[int]:
    """The fold's test classes: PASCAL 5f+1..5f+5; COCO (FWB split) f+1, f+5, ..., f+77."""
    if fold not in (0, 1, 2, 3):
        raise ValueError(f"fold must be 0, 1, 2 or 3, got {fold}")
    if dataset == "coco":
        return list(range(fold + 1, 81, 4))
    if dataset != "pascal":
        raise ValueError(f"dataset must be 'pascal' or 'coco', got {dataset!r}")
    return list(range(5 * fold + 1, 5 * fold + 6))


def class_name(dataset: str, c: int) -> str:
    return VOC_CLASSES[c - 1] if dataset == "pascal" else f"coco class {c}"


def sample_episodes(data_dir: str | Path, lists_dir: str | Path, fold: int, *, shots: int = 1,
                    seed: int = 321, episodes: int = 1000, dataset: str = "pascal"
                    ) -> list[dict[str, Any]]:
    """Episodes as dicts: ``class`` (VOC id), ``query`` and ``supports`` ((image, label)
    paths under DATA_DIR)."""
    data_dir, lists_dir = Path(data_dir), Path(lists_dir)
    val_classes = fold_classes(fold, dataset)
    root = ROOT_NAME[dataset]
    lines = _need(lists_dir / f"data_list_{fold}.txt", "data list").read_text().splitlines()
    data = [tuple(_local(data_dir, p, root) for p in ln.split(" ")) for ln in lines if ln.strip()]
    raw = ast.literal_eval(_need(lists_dir / f"sub_class_file_list_{fold}.txt",
                                 "class file list").read_text())
    per_class = {int(c): [(_local(data_dir, i, root), _local(data_dir, l, root)) for i, l in files]
                 for c, files in raw.items()}
    rng = random.Random(seed)
    out = []
    for e in range(episodes):
        query = data[e % len(data)]
        present = [int(c) for c in np.unique(read_labels(query[1])) if int(c) in val_classes]
        if not present:
            raise ValueError(f"{dataset}: query {query[1]} has no class of fold {fold} "
                             f"({val_classes})")
        chosen = present[rng.randint(1, len(present)) - 1]
        files = per_class.get(chosen, [])
        if len(files) < shots + 1:
            raise ValueError(f"{dataset}: class {chosen} lists {len(files)} files; "
                             f"{shots}-shot needs {shots + 1}")
        supports, taken = [], []
        for _ in range(shots):
            idx = rng.randint(1, len(files)) - 1
            pair = query
            while pair == query or idx in taken:
                idx = rng.randint(1, len(files)) - 1
                pair = files[idx]
            taken.append(idx)
            supports.append(pair)
        out.append({"class": chosen, "query": query, "supports": supports})
    return out


def build(data_dir: str | Path, lists_dir: str | Path, out: str | Path, *, fold: int,
          shots: int = 1, seed: int = 321, episodes: int = 1000, dataset: str = "pascal",
          storage: str = "mcap", start_ns: int = 1_000_000_000, overwrite: bool = False) -> Path:
    """Write ``out/bags/<episode:05d>`` per episode and ``out/index.json``."""
    data_dir, out = Path(data_dir), Path(out)
    eps = sample_episodes(data_dir, lists_dir, fold, shots=shots, seed=seed, episodes=episodes,
                          dataset=dataset)
    for ep in eps:
        for img, lab in [ep["query"], *ep["supports"]]:
            _need(img, "image")
            _need(lab, "label")
    entries = []
    for e, ep in enumerate(eps):
        c = ep["class"]
        name = class_name(dataset, c)
        rel = Path("bags") / f"{e:05d}"
        q_img = read_rgb(ep["query"][0])
        q_lab = read_labels(ep["query"][1])
        if q_lab.shape != q_img.shape[:2]:
            raise ValueError(f"label {ep['query'][1]} and image {ep['query'][0]} differ in size")
        gt = np.where(q_lab == c, 1, 0).astype(np.uint8)
        gt[q_lab == IGNORE] = IGNORE
        with bags.BagWriter(out / rel, storage=storage, overwrite=overwrite) as writer:
            writer.set_protocol("one-shot")
            writer.set_objects({1: name})
            writer.set_ignore_label(IGNORE)
            for k, (s_img_path, s_lab_path) in enumerate(ep["supports"]):
                s_img = read_rgb(s_img_path)
                s_mask = read_labels(s_lab_path) == c
                if s_mask.shape != s_img.shape[:2]:
                    raise ValueError(f"label {s_lab_path} and image {s_img_path} differ in size")
                writer.write_reference(bags.REFERENCE_TOPIC, start_ns, 1, name, s_img, s_mask,
                                       camera=bags.CAMERA_TOPIC, add_view=k > 0)
            writer.write_image(bags.CAMERA_TOPIC, start_ns + 500_000_000, q_img)
            writer.write_label_map(bags.GROUND_TRUTH_TOPIC, start_ns + 500_000_000, gt)
        entries.append({"name": f"{e:05d}", "path": str(rel), "storage": storage,
                        "class": name, "class_id": c,
                        "query": str(ep["query"][0].relative_to(data_dir)),
                        "supports": [str(s[0].relative_to(data_dir)) for s in ep["supports"]],
                        "size": [int(gt.shape[0]), int(gt.shape[1])],
                        "ignore_pixels": int((gt == IGNORE).sum())})
    proto = {"name": "PASCAL-5i" if dataset == "pascal" else "COCO-20i",
             "loader": "Sam1224/FSSAM util/dataset.py (val), test.py",
             "prompt": "reference-topic", "overlaps": "keep", "fold": fold,
             "classes": [class_name(dataset, c) for c in fold_classes(fold, dataset)],
             "shots": shots,
             "seed": seed, "episodes": len(eps), "eval_size": None, "ignore_label": IGNORE,
             "metric": "mIoU, FB-IoU", "summary": "episodes-miou-fbiou",
             "not_reproduced": "FSSAM draws in 32 torch-seeded DataLoader workers; these are "
                               "one process's draws after random.seed(seed)"}
    benchmark = "pascal5i" if dataset == "pascal" else "coco20i"
    return write_index(out, benchmark, proto, entries, data_dir=str(data_dir.resolve()),
                       lists_dir=str(Path(lists_dir).resolve()))
