"""``index.json``: what an importer wrote and how to score it.

Layout (``OUT/index.json``, written atomically after every bag)::

    {"format": "refseg-eval-index", "version": 1,
     "benchmark": "davis2017", "split": "val", "data_dir": "...",
     "protocol": {"name": ..., "prompt": "first-frame-gt", "overlaps": "label-map",
                  "scored_frames": ..., "summary": "mean-over-objects", ...},
     "bags": [{"name": "bike-packing", "path": "bags/bike-packing", "storage": "mcap",
               "frames": 69, "scored_frames": 67, "objects": {"1": "...", ...}}, ...]}

``protocol["prompt"]`` and ``protocol["overlaps"]`` are the ``refseg-eval run`` options
of every bag (:func:`run_options`); ``protocol["summary"]`` is how the per-bag reports
combine into the benchmark's numbers (:func:`summarize`). Bag paths are relative to the
index's folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

INDEX_FILE = "index.json"
FORMAT = "refseg-eval-index"
VERSION = 1
SUMMARIES = ("mean-over-objects", "episodes-miou-fbiou")


def write_index(out: Path, benchmark: str, protocol: dict[str, Any], entries: list[dict[str, Any]],
                **extra: Any) -> Path:
    """Write ``out/index.json`` under a temporary name and rename it into place."""
    if protocol.get("summary") not in SUMMARIES:
        raise ValueError(f"protocol summary must be one of {SUMMARIES}, got "
                         f"{protocol.get('summary')!r}")
    doc = {"format": FORMAT, "version": VERSION, "benchmark": benchmark, **extra,
           "protocol": protocol, "bags": entries}
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".json", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    path = out / INDEX_FILE
    os.replace(tmp, path)
    return path


def read_index(path: str | Path) -> dict[str, Any]:
    """An index (the file, or the folder holding ``index.json``), bag paths made absolute.

    FileNotFoundError naming the missing file; ValueError for another format/version.
    """
    p = Path(path)
    if p.is_dir():
        p = p / INDEX_FILE
    if not p.is_file():
        raise FileNotFoundError(f"no benchmark index {p}")
    doc = json.loads(p.read_text())
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(f"{p} is not a refseg-eval index (format {FORMAT!r} version {VERSION})")
    for entry in doc["bags"]:
        entry["bag"] = str((p.parent / entry["path"]).resolve())
    return doc


def run_options(index: Mapping[str, Any]) -> dict[str, str]:
    """The ``RunConfig`` fields the protocol fixes for every bag: prompt and overlaps."""
    proto = index["protocol"]
    return {"prompt": proto["prompt"], "overlaps": proto["overlaps"]}


def summarize(index: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The benchmark's numbers from each bag's ``report.json`` (by bag name).

    ``mean-over-objects`` (DAVIS toolkit): every (sequence, object) is one row with its
    own J/F mean, recall and decay over its scored frames; each statistic is the mean
    over rows, and J&F the mean of J and F. KeyError naming a bag without a report.
    """
    proto = index["protocol"]
    if proto["summary"] == "episodes-miou-fbiou":
        return _episodes_summary(index, reports)
    if proto["summary"] != "mean-over-objects":
        raise ValueError(f"unknown summary rule {proto['summary']!r}")
    rows: dict[str, dict[str, float]] = {}
    for entry in index["bags"]:
        name = entry["name"]
        if name not in reports:
            raise KeyError(f"no report for bag {name!r} of the index")
        for tid, s in sorted(reports[name]["per_target"].items(), key=lambda kv: int(kv[0])):
            if s.get("frames", 0) > 0:
                rows[f"{name}_{tid}"] = s
    keys = ("j_mean", "f_mean", "j_recall", "f_recall", "j_decay", "f_decay")
    out: dict[str, Any] = {}
    for k in keys:
        vals = [float(r[k]) for r in rows.values() if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    out["jf_mean"] = (out["j_mean"] + out["f_mean"]) / 2
    out["objects"] = len(rows)
    out["per_object"] = {k: {"j_mean": r["j_mean"], "f_mean": r["f_mean"]} for k, r in rows.items()}
    return out


def _episodes_summary(index: Mapping[str, Any], reports: Mapping[str, Mapping[str, Any]]
                      ) -> dict[str, Any]:
    """mIoU and FB-IoU over one-episode bags: each report's query row gives J and the two
    areas, so intersection = J (gt + pred) / (1 + J) and union = gt + pred - intersection;
    the background's follow from the query size in the index entry, less its ignored
    pixels (``ignore_pixels``; the run leaves them out of J and the areas). Per class IoU = summed
    intersections / max(summed unions, 1) (an all-empty class scores 0, as in HSNet);
    mIoU = their mean; FB-IoU = mean of the foreground and background IoU summed over all
    episodes."""
    inter: dict[str, int] = {}
    union: dict[str, int] = {}
    fg_i = fg_u = bg_i = bg_u = 0
    for entry in index["bags"]:
        name = entry["name"]
        if name not in reports:
            raise KeyError(f"no report for bag {name!r} of the index")
        rows = reports[name]["frames"]
        if len(rows) != 1:
            raise ValueError(f"bag {name!r}: expected one scored query, found {len(rows)}")
        r = rows[0]
        j, gt, pred = float(r["j"]), int(r["gt_area"]), int(r["pred_area"])
        i = int(round(j * (gt + pred) / (1 + j)))
        u = gt + pred - i
        n = int(entry["size"][0]) * int(entry["size"][1]) - int(entry.get("ignore_pixels", 0))
        c = entry["class"]
        inter[c] = inter.get(c, 0) + i
        union[c] = union.get(c, 0) + u
        fg_i, fg_u = fg_i + i, fg_u + u
        bg_i, bg_u = bg_i + (n - u), bg_u + (n - i)
    class_iou = {c: inter[c] / max(union[c], 1) for c in inter}
    miou = float(np.mean(list(class_iou.values()))) if class_iou else float("nan")
    fb = (fg_i / max(fg_u, 1) + bg_i / max(bg_u, 1)) / 2 if class_iou else float("nan")
    return {"miou": miou, "fb_iou": fb, "episodes": len(index["bags"]), "class_iou": class_iou}
