"""Few-shot segmentation benchmarks -> one one-shot bag per episode and ``index.json``.

Episodes are drawn exactly as PATNet's test loaders draw them (slei109/PATNet,
``data/{fss,deepglobe,isic,lung}.py``, the cross-domain protocol that later CD-FSS work
such as CAV-SAM reuses): a legacy NumPy generator seeded with ``seed`` (PATNet's
``fix_randseed(0)``), queried in the same order with the same calls, so the episode list
(query, supports) is the published one for seed 0. Images and masks are resized to
``size`` x ``size`` (400, PATNet's evaluation size: bilinear image, nearest mask) and
masks are binarised at 128 of their greyscale, as those loaders do.

Layouts read (DATA_DIR is the benchmark's own folder):

``fss1000``   ``DATA_DIR/<class>/<n>.jpg`` and ``<n>.png`` (n = 1..10); classes from
              ``--classes-file`` (HSNet/PATNet ``data/splits/fss/test.txt``: 240 names),
              else every class folder. Every query image of every class is one episode
              (2,400 on the test split); supports are ``<k>.jpg``, k drawn from 1..10,
              never the query.
``deepglobe`` ``DATA_DIR/<1..6>/test/origin/<id>.jpg`` and
              ``DATA_DIR/<c>/test/groundtruth/<id>.png``.
``isic``      ``DATA_DIR/ISIC2018_Task1-2_Training_Input/<1|2|3>/<id>.jpg`` and
              ``DATA_DIR/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png``.
``chest-xray`` ``DATA_DIR/masks/<id>_mask.png`` (the episode pool) and
              ``DATA_DIR/CXR_png/<id>.png``.

For the three cross-domain sets episode e takes class ``e mod classes``, a random query
of that class, and ``shots`` random supports different from the query (two supports
may coincide, as in PATNet); ``episodes`` defaults to PATNet's 600.

Scoring (index rule ``episodes-miou-fbiou``, HSNet/PATNet ``AverageMeter``): per class,
intersections and unions summed over its episodes, IoU = sum / max(sum, 1); mIoU = mean
over classes; FB-IoU = mean of the background and the foreground IoU, each summed over
all episodes.

Errors: FileNotFoundError naming the missing class file, folder, image or mask;
ValueError for a class with too few images, or an image and mask of different sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from refseg_ros.eval import bags
from refseg_ros.eval.importers.index import write_index

BENCHMARKS = ("fss1000", "deepglobe", "isic", "chest-xray")
DEFAULT_EPISODES = 600  # PATNet's DatasetDeepglobe/ISIC/Lung ``num``
LOADER = {"fss1000": "cdfss", "deepglobe": "deepglobe", "isic": "isic", "chest-xray": "lung"}
EVAL_SIZE = 400  # PATNet test.py: FSSDataset.initialize(img_size=400)


def _need(path: Path, what: str, benchmark: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{benchmark} layout: missing {what} {path}")
    return path


def _jpgs(folder: Path, ext: str = "jpg") -> list[Path]:
    """PATNet's listing: ``sorted(glob(folder/*))`` (string order) keeping files whose
    text after the first dot is ``ext``."""
    return sorted((p for p in folder.iterdir() if p.name.split(".")[1:2] == [ext]), key=str)


def read_mask(path: Path) -> np.ndarray:
    """A mask file as bool: greyscale >= 128 (PIL ``convert('L')``)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("L")) >= 128
    except OSError as exc:
        raise ValueError(f"cannot read mask {path}: {exc}") from exc


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def resize_pair(image: np.ndarray, mask: np.ndarray, size: Optional[int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear (PIL, as torchvision Resize) and mask nearest (torch
    ``F.interpolate(mode='nearest')``: source index floor(i * in / out)) to size x size."""
    if size is None:
        return image, mask
    from PIL import Image

    img = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    h, w = mask.shape
    rows = np.floor(np.arange(size) * (h / size)).astype(int)
    cols = np.floor(np.arange(size) * (w / size)).astype(int)
    return img, mask[rows][:, cols]


def _pools(benchmark: str, data_dir: Path, classes_file: Optional[Path]
           ) -> tuple[list[str], dict[str, list[Path]]]:
    if benchmark == "fss1000":
        if classes_file is not None:
            names = [n for n in _need(classes_file, "class list", benchmark).read_text()
                     .split("\n") if n.strip()]
        else:
            names = [p.name for p in data_dir.iterdir() if p.is_dir()]
        names = sorted(names)
        return names, {c: _jpgs(_need(data_dir / c, "class folder", benchmark)) for c in names}
    if benchmark == "deepglobe":
        names = [str(c) for c in range(1, 7)]
        return names, {c: _jpgs(_need(data_dir / c / "test" / "origin", "image folder",
                                      benchmark)) for c in names}
    if benchmark == "isic":
        names = ["1", "2", "3"]
        root = data_dir / "ISIC2018_Task1-2_Training_Input"
        return names, {c: _jpgs(_need(root / c, "image folder", benchmark)) for c in names}
    masks = _need(data_dir / "masks", "mask folder", benchmark)
    return ["1"], {"1": _jpgs(masks, "png")}


def _pair(benchmark: str, data_dir: Path, item: Path) -> tuple[Path, Path]:
    """(image, mask) of a pool item, as each PATNet loader derives one from the other."""
    stem = item.name.split(".")[0]
    if benchmark == "fss1000":
        return item, item.parent / f"{stem}.png"
    if benchmark == "deepglobe":
        return item, item.parent.parent / "groundtruth" / f"{stem}.png"
    if benchmark == "isic":
        return item, data_dir / "ISIC2018_Task1_Training_GroundTruth" / f"{stem}_segmentation.png"
    return data_dir / "CXR_png" / f"{item.name[:-9]}.png", item


def sample_episodes(benchmark: str, data_dir: str | Path, *, shots: int = 1, seed: int = 0,
                    episodes: int = DEFAULT_EPISODES, classes_file: Optional[Path] = None
                    ) -> list[dict[str, Any]]:
    """The episode list: dicts with ``class``, ``query`` and ``supports`` (paths of the
    pool items: images, or masks for chest-xray), in PATNet's order."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    data_dir = Path(data_dir)
    _need(data_dir, "dataset folder", benchmark)
    names, pools = _pools(benchmark, data_dir, classes_file)
    for c, pool in pools.items():
        if len(pool) < 2:
            raise ValueError(f"{benchmark}: class {c!r} has {len(pool)} images; an episode "
                             "needs a query and a different support")
    rs = np.random.RandomState(seed)
    out = []
    if benchmark == "fss1000":
        for c in names:
            for query in pools[c]:
                supports: list[Path] = []
                while len(supports) < shots:
                    k = int(rs.choice(range(1, 11), 1, replace=False)[0])
                    cand = query.parent / f"{k}.jpg"
                    if cand != query:
                        supports.append(cand)
                out.append({"class": c, "query": query, "supports": supports})
        return out
    for e in range(episodes):
        c = names[e % len(names)]
        pool = [str(p) for p in pools[c]]
        query = rs.choice(pool, 1, replace=False)[0]
        supports_s: list[str] = []
        while len(supports_s) < shots:
            cand = rs.choice(pool, 1, replace=False)[0]
            if cand != query:
                supports_s.append(cand)
        out.append({"class": c, "query": Path(query), "supports": [Path(s) for s in supports_s]})
    return out


def _load(benchmark: str, data_dir: Path, item: Path, size: Optional[int]
          ) -> tuple[np.ndarray, np.ndarray]:
    img_path, mask_path = _pair(benchmark, data_dir, item)
    _need(img_path, "image", benchmark)
    _need(mask_path, "mask", benchmark)
    image, mask = read_image(img_path), read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                         f"{img_path} is {image.shape[1]}x{image.shape[0]}")
    return resize_pair(image, mask, size)


def build(benchmark: str, data_dir: str | Path, out: str | Path, *, shots: int = 1,
          seed: int = 0, episodes: int = DEFAULT_EPISODES, classes_file: Optional[Path] = None,
          size: Optional[int] = EVAL_SIZE, storage: str = "mcap",
          start_ns: int = 1_000_000_000, overwrite: bool = False) -> Path:
    """Write ``out/bags/<episode:05d>`` per episode and ``out/index.json``: each bag has
    the supports on the reference topic (target 1, label = class; the first teaches, the
    others add examples) and, half a second later, the query frame and its ground truth."""
    data_dir, out = Path(data_dir), Path(out)
    eps = sample_episodes(benchmark, data_dir, shots=shots, seed=seed, episodes=episodes,
                          classes_file=classes_file)
    for ep in eps:  # every file of every episode exists before a bag is written
        for item in [ep["query"], *ep["supports"]]:
            for path, what in zip(_pair(benchmark, data_dir, item), ("image", "mask")):
                _need(path, what, benchmark)
    entries = []
    for e, ep in enumerate(eps):
        rel = Path("bags") / f"{e:05d}"
        q_img, q_mask = _load(benchmark, data_dir, ep["query"], size)
        with bags.BagWriter(out / rel, storage=storage, overwrite=overwrite) as writer:
            writer.set_protocol("one-shot")
            writer.set_objects({1: ep["class"]})
            for k, item in enumerate(ep["supports"]):
                s_img, s_mask = _load(benchmark, data_dir, item, size)
                writer.write_reference(bags.REFERENCE_TOPIC, start_ns, 1, ep["class"], s_img,
                                       s_mask, camera=bags.CAMERA_TOPIC, add_view=k > 0)
            writer.write_image(bags.CAMERA_TOPIC, start_ns + 500_000_000, q_img)
            writer.write_label_map(bags.GROUND_TRUTH_TOPIC, start_ns + 500_000_000,
                                   q_mask.astype(np.uint8))
        entries.append({"name": f"{e:05d}", "path": str(rel), "storage": storage,
                        "class": ep["class"],
                        "query": str(ep["query"].relative_to(data_dir)),
                        "supports": [str(s.relative_to(data_dir)) for s in ep["supports"]],
                        "size": [int(q_mask.shape[0]), int(q_mask.shape[1])]})
    proto = {"name": {"fss1000": "FSS-1000", "deepglobe": "DeepGlobe", "isic": "ISIC 2018",
                      "chest-xray": "Chest X-ray"}[benchmark],
             "loader": f"slei109/PATNet data/{LOADER[benchmark]}.py",
             "prompt": "reference-topic", "overlaps": "keep", "shots": shots, "seed": seed,
             "episodes": len(eps), "eval_size": size, "mask_threshold": 128,
             "metric": "mIoU, FB-IoU", "summary": "episodes-miou-fbiou"}
    return write_index(out, benchmark, proto, entries, data_dir=str(data_dir.resolve()))
