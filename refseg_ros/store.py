"""The target store: what a user taught, on disk, so that a restart (or a crash) keeps it.

ROS-free on purpose: the node, the teach tool and the tests read and write it the same
way. Layout of ``store_dir``::

    store.json                  {"version": 1, "next_id": N}
    target-000007.json          one taught target (id, label, kind, camera, caption,
                                how it was taught, prompt numbers, and the names of
                                its image files)
    target-000007-r3.image.png  the reference image (RGB) of revision 3
    target-000007-r3.mask.png   its mask (0 / 255)
    target-000007-r3.view1.image.png, ...view1.mask.png
                                more examples of a reference target (k-shot), if taught

Every file is written atomically (temporary file, fsync, os.replace, fsync of the
directory). A target's JSON file is its commit record: its PNG files are written first,
under names that carry a revision number, and the JSON file naming them is replaced
last. A crash at any point therefore leaves either the old target or the new one, never
a mix; files that no JSON file names are leftovers of an interrupted write and are
removed when the store is opened.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .atomicfile import atomic_write, fsync_dir

KINDS = ("reference", "mask", "box", "points", "caption")
#: TaughtTarget.source of a caption taught on the node's caption topic (the topic's
#: captions are compared with each other, and in replace mode a new one replaces them).
CAPTION_TOPIC = "caption_topic"
_TARGET_JSON = re.compile(r"^target-(\d+)\.json$")
_VERSION = 1


class StoreError(RuntimeError):
    """The store directory cannot be read or written."""


@dataclass
class TaughtTarget:
    """One target as the user taught it; enough to teach it again after a restart.

    ``image`` is H x W x 3 uint8 RGB; ``mask`` H x W bool. A caption target has neither.
    A box/points target keeps the image its prompt lies on. ``views`` holds further
    (image, mask) examples of a reference target, taught after the first (k-shot).
    ``source`` is how it was taught when that matters later: CAPTION_TOPIC for a caption
    from the caption topic, "" otherwise (a service call, the reference topic).
    """

    target_id: int
    label: str
    kind: str
    camera: str = ""  # "" = every camera
    caption: str = ""
    image: Optional[np.ndarray] = field(default=None, repr=False)
    mask: Optional[np.ndarray] = field(default=None, repr=False)
    box: Optional[tuple[float, float, float, float]] = None
    points: Optional[list[tuple[float, float]]] = None
    point_labels: Optional[list[int]] = None
    views: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)
    revision: int = 0
    source: str = ""


def encode_png(array: np.ndarray) -> bytes:
    import cv2  # deferred: keeps the store importable without OpenCV for JSON-only use

    if array.ndim == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])  # RGB -> OpenCV's BGR
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise StoreError(f"could not encode a {array.shape} {array.dtype} image as PNG")
    return buf.tobytes()


def decode_png(path: Path, color: bool) -> np.ndarray:
    import cv2

    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(data, flag)
    if image is None:
        raise StoreError(f"{path} is not a readable PNG")
    return np.ascontiguousarray(image[:, :, ::-1]) if color else image


class TargetStore:
    """Taught targets in a directory; every method is durable when it returns."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory).expanduser()
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the target store {self.dir}: {exc}") from exc
        self._next_id = self._read_next_id()
        self.skipped: list[str] = []  # why files were not loaded, for the node to report
        self._remove_leftovers()

    # ---------------------------------------------------------------------------- ids
    def allocate_id(self) -> int:
        """A fresh id, never handed out before by this store (durable before it returns)."""
        with self._lock:
            ids = [tid for tid, _ in self._json_files()]
            tid = max([self._next_id] + [i + 1 for i in ids])
            self._write_next_id(tid + 1)
            return tid

    def reserve_id(self, target_id: int) -> None:
        """Make sure later allocations do not hand out `target_id` again."""
        with self._lock:
            if target_id >= self._next_id:
                self._write_next_id(target_id + 1)

    # ------------------------------------------------------------------------ targets
    def save(self, target: TaughtTarget) -> TaughtTarget:
        """Write (or replace) a target; returns it with its new revision."""
        if target.kind not in KINDS:
            raise StoreError(f"unknown target kind {target.kind!r} (known: {', '.join(KINDS)})")
        with self._lock:
            old = self._read_record(target.target_id)
            revision = (old or {}).get("revision", 0) + 1
            record = {
                "target_id": int(target.target_id), "label": target.label, "kind": target.kind,
                "camera": target.camera, "caption": target.caption, "revision": revision,
                "source": target.source,
                "box": None if target.box is None else [float(v) for v in target.box],
                "points": None if target.points is None else [[float(x), float(y)] for x, y in target.points],
                "point_labels": None if target.point_labels is None else [int(v) for v in target.point_labels],
                "image": None, "mask": None, "views": [],
            }
            stem = f"target-{target.target_id:06d}-r{revision}"
            if target.image is not None:
                record["image"] = self._write_image(f"{stem}.image.png", target.image)
            if target.mask is not None:
                record["mask"] = self._write_mask(f"{stem}.mask.png", target.mask)
            for k, (image, mask) in enumerate(target.views, start=1):
                record["views"].append({"image": self._write_image(f"{stem}.view{k}.image.png", image),
                                        "mask": self._write_mask(f"{stem}.view{k}.mask.png", mask)})
            atomic_write(self._json_path(target.target_id),
                         json.dumps(record, indent=1, sort_keys=True).encode())
            if target.target_id >= self._next_id:
                self._write_next_id(target.target_id + 1)
            if old is not None:
                self._unlink_files(old)
        target.revision = revision
        return target

    def remove(self, target_id: int) -> bool:
        """Forget a target; False when the store did not hold it."""
        with self._lock:
            old = self._read_record(target_id)
            if old is None:
                return False
            self._json_path(target_id).unlink()
            fsync_dir(self.dir)
            self._unlink_files(old)
            return True

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(tid for tid, _ in self._json_files())

    def load(self, target_id: int) -> TaughtTarget:
        with self._lock:
            record = self._read_record(target_id)
            if record is None:
                raise KeyError(target_id)
            return self._to_target(record)

    def load_all(self) -> list[TaughtTarget]:
        """Every readable target, by id; unreadable ones are named in `self.skipped`."""
        targets = []
        for tid in self.ids():
            try:
                targets.append(self.load(tid))
            except (StoreError, OSError, ValueError, KeyError) as exc:
                self.skipped.append(f"target {tid}: {exc}")
        return targets

    # ---------------------------------------------------------------------- internals
    def _write_image(self, name: str, image: np.ndarray) -> str:
        atomic_write(self.dir / name, encode_png(np.asarray(image, np.uint8)))
        return name

    def _write_mask(self, name: str, mask: np.ndarray) -> str:
        atomic_write(self.dir / name, encode_png((np.asarray(mask) != 0).astype(np.uint8) * 255))
        return name

    def _json_path(self, target_id: int) -> Path:
        return self.dir / f"target-{int(target_id):06d}.json"

    def _json_files(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.dir.iterdir():
            m = _TARGET_JSON.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        return found

    def _read_record(self, target_id: int) -> Optional[dict]:
        path = self._json_path(target_id)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is unreadable: {exc}") from exc

    def _to_target(self, record: dict) -> TaughtTarget:
        image = decode_png(self.dir / record["image"], color=True) if record.get("image") else None
        mask = decode_png(self.dir / record["mask"], color=False) > 0 if record.get("mask") else None
        return TaughtTarget(
            target_id=int(record["target_id"]), label=record.get("label", ""), kind=record["kind"],
            camera=record.get("camera", ""), caption=record.get("caption", ""), image=image, mask=mask,
            box=tuple(record["box"]) if record.get("box") else None,
            points=[tuple(p) for p in record["points"]] if record.get("points") else None,
            point_labels=list(record["point_labels"]) if record.get("point_labels") else None,
            views=[(decode_png(self.dir / v["image"], color=True), decode_png(self.dir / v["mask"], color=False) > 0)
                   for v in record.get("views") or []],
            revision=int(record.get("revision", 0)), source=record.get("source") or "",
        )

    def _unlink_files(self, record: dict) -> None:
        """Delete a dropped record's images, best effort.

        Runs after the record's JSON change is durable (the commit point), so a failure here
        must not undo an acknowledged change: the files left behind name no committed
        target and are swept by the next start's `_remove_leftovers`.
        """
        try:
            for name in _file_names(record):
                (self.dir / name).unlink(missing_ok=True)
            fsync_dir(self.dir)
        except OSError:
            pass

    def _read_next_id(self) -> int:
        try:
            return max(1, int(json.loads((self.dir / "store.json").read_text())["next_id"]))
        except FileNotFoundError:
            return 1
        except (OSError, ValueError, KeyError, TypeError):
            return 1  # the ids in the target files still bound what may be handed out

    def _write_next_id(self, next_id: int) -> None:
        self._next_id = next_id
        atomic_write(self.dir / "store.json",
                     json.dumps({"version": _VERSION, "next_id": next_id}).encode())

    def _remove_leftovers(self) -> None:
        """Delete temporary files and images that no committed target names."""
        with self._lock:
            named = {"store.json"}
            for _, path in self._json_files():
                named.add(path.name)
                try:
                    record = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # keep its files; load_all reports it
                named.update(_file_names(record))
            removed = False
            for path in self.dir.iterdir():
                leftover = path.name.endswith(".tmp") or (
                    path.name.startswith("target-") and path.name not in named)
                if leftover and path.is_file():
                    path.unlink()
                    removed = True
            if removed:
                fsync_dir(self.dir)


def _file_names(record: dict) -> list[str]:
    """The image files a target record names (its reference, mask and further views)."""
    names = [record.get("image"), record.get("mask")]
    for view in record.get("views") or []:
        names += [view.get("image"), view.get("mask")]
    return [n for n in names if n]
