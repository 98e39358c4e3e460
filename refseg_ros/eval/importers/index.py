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
SUMMARIES = ("mean-over-objects",)


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
