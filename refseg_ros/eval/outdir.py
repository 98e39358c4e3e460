"""The output directory of an evaluation run: atomic files, stage markers, per-frame
results and predicted masks.

Evaluations run for a long time and get interrupted. Everything here is written so that
a file either holds its full content or does not exist under its final name (write to
a temporary name in the same directory, then rename), results are appended one frame
per line so that an interrupted run keeps what it did, and the ``.complete`` marker is
written last, after the report, so nothing half-written ever looks finished.

Layout::

    run.json          what was run (bag, topics, protocol, engine settings)
    results.jsonl     one line per processed frame: stamp, timing, per-target summary
    pred/NNNNNN.npz   predicted masks of that frame (bit-packed, lossless)
    inference.done    every frame has its result
    report.json, report.md, plots/*.png
    node.log          the node's output (live mode)
    .complete         the report is finished
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from refseg_ros.atomicfile import atomic_write

COMPLETE = ".complete"
INFERENCE_DONE = "inference.done"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"
PRED_DIR = "pred"
NODE_LOG = "node.log"  # the node's output, in live mode
# What a run may write; --overwrite removes only these, never anything else in the folder.
OWNED = (COMPLETE, INFERENCE_DONE, RUN_FILE, RESULTS_FILE, PRED_DIR, "report.json",
         "report.md", "plots", NODE_LOG)


class OutputDirError(RuntimeError):
    """The output directory holds another run's results, or cannot be used."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    atomic_write(path, data, durable_rename=False)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def mask_digest(mask: np.ndarray) -> str:
    """A short fingerprint of a mask, to check that a replay reproduces a stored result."""
    m = np.ascontiguousarray(np.asarray(mask, bool))
    h = hashlib.sha1(np.asarray(m.shape, np.int64).tobytes())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()[:16]


class RunDirectory:
    """One run's output directory (see the module docstring for the layout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- identity -----------------------------------------------------------------

    def claim(self, run_info: dict[str, Any], overwrite: bool = False) -> bool:
        """Take the directory for this run; True when it already holds this run's work.

        A directory holding a different run is refused (or emptied of what runs write
        when ``overwrite``), so results of two configurations never mix.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        run_file = self.path / RUN_FILE
        previous: Optional[dict[str, Any]] = None
        if run_file.exists():
            try:
                previous = json.loads(run_file.read_text())
            except ValueError:
                previous = None
        same = previous == json.loads(json.dumps(run_info, default=_json_default))
        if previous is not None and not same and not overwrite:
            raise OutputDirError(
                f"output directory {self.path} holds results of a different run; use another "
                f"directory or --overwrite (differences: {_diff(previous, run_info)})")
        if overwrite or (previous is None and self._has_owned_files()):
            self.clear()
            same = False
        self.discard_marker(COMPLETE)
        atomic_write_json(run_file, run_info)
        return same

    def _has_owned_files(self) -> bool:
        return any((self.path / name).exists() for name in OWNED)

    def clear(self) -> None:
        """Remove what a run writes (and nothing else)."""
        for name in OWNED:
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # --- markers ------------------------------------------------------------------

    def has_marker(self, name: str) -> bool:
        return (self.path / name).exists()

    def write_marker(self, name: str, info: Optional[dict[str, Any]] = None) -> None:
        atomic_write_json(self.path / name, info or {})

    def discard_marker(self, name: str) -> None:
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            pass

    # --- per-frame results ------------------------------------------------------------

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    def read_results(self) -> list[dict[str, Any]]:
        """Complete lines of results.jsonl; a torn last line (a crash mid-write) is dropped
        from the file too, so appending continues on a clean line."""
        path = self.results_path
        if not path.exists():
            return []
        raw = path.read_bytes()
        records: list[dict[str, Any]] = []
        good = 0
        for line in raw.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except ValueError:
                break
            good += len(line)
        if good != len(raw):
            with open(path, "r+b") as fh:
                fh.truncate(good)
        return records

    def truncate_results(self, keep: int) -> None:
        """Keep only the first ``keep`` records (used when a replay diverges)."""
        records = self.read_results()[:keep]
        atomic_write_text(self.results_path, "".join(json.dumps(r, default=_json_default) + "\n"
                                                     for r in records))

    def append_results(self, records: Iterable[dict[str, Any]]) -> None:
        with open(self.results_path, "a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=_json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # --- predicted masks ----------------------------------------------------------

    def pred_path(self, frame_index: int) -> Path:
        return self.path / PRED_DIR / f"{frame_index:06d}.npz"

    def save_masks(self, frame_index: int, masks: dict[int, np.ndarray]) -> None:
        """Store a frame's per-target masks losslessly (bit-packed, compressed)."""
        arrays: dict[str, np.ndarray] = {}
        for tid, mask in masks.items():
            m = np.asarray(mask, bool)
            arrays[f"t{int(tid)}"] = np.packbits(m)
            arrays[f"s{int(tid)}"] = np.asarray(m.shape, np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(self.pred_path(frame_index), buf.getvalue())

    def load_masks(self, frame_index: int) -> dict[int, np.ndarray]:
        path = self.pred_path(frame_index)
        with np.load(path) as data:
            out = {}
            for key in data.files:
                if key.startswith("t"):
                    tid = int(key[1:])
                    shape = tuple(int(v) for v in data[f"s{tid}"])
                    n = int(np.prod(shape))
                    out[tid] = np.unpackbits(data[key], count=n).astype(bool).reshape(shape)
        return out


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    b = json.loads(json.dumps(b, default=_json_default))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys) or "none"
