"""Score stored results against the bag's ground truth and assemble the report's data.

Scoring reads the predicted masks back from the run directory, never from memory, so a
resumed run and a fresh one score exactly the same bytes.

Which (frame, target) pairs count:
- a target is scored on every ground-truth frame of its episode stamped at or after its
  prompt, except the frame its mask prompt lies on (that frame's answer is the prompt);
- a frame without a result (dropped by a live node) is scored with the target's most
  recent earlier result in the episode, which is what a consumer of the node would have
  used, or an empty mask if there is none; offline replay never drops frames;
- a bag naming an ignore label (``refseg.ignore_label``, PASCAL's 255) leaves those
  ground-truth pixels out: the prediction there is dropped before scoring, and the
  background of mIoU/FB-IoU counts only the other pixels;
- overlaps between targets (``overlaps``): ``keep`` scores each target's own mask as the
  source returned it, so an overlapped pixel counts for both (the engine's per-target
  masks are what the node's object list carries); ``label-map`` first merges a frame's
  masks into one label map, as DAVIS scores a frame, where the smallest target id keeps
  an overlapped pixel (the rule SAM2's VOS tooling writes its label maps by).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from refseg_ros.eval import bags, metrics
from refseg_ros.eval.outdir import RunDirectory
from refseg_ros.eval.plan import EvalPlan
from refseg_ros.eval.report import Overlay, ReportData, target_colour

OVERLAP_RULES = ("keep", "label-map")


@dataclass
class Scores:
    rows: list[dict[str, Any]] = field(default_factory=list)  # frame, target, j, f...
    per_target: dict[int, metrics.SequenceScore] = field(default_factory=dict)
    episodes: Optional[metrics.EpisodeAccumulator] = None
    held: int = 0  # (frame, target) pairs scored with a held earlier result


def as_label_map(masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Each target's pixels once the masks are merged into one label map: where masks
    overlap, the smallest target id keeps the pixel."""
    taken: Optional[np.ndarray] = None
    kept = {}
    for tid in sorted(masks):
        mask = masks[tid]
        taken = np.zeros(mask.shape, bool) if taken is None else taken
        kept[tid] = mask & ~taken
        taken |= mask
    return {tid: kept[tid] for tid in masks}


def score_results(plan: EvalPlan, reader: bags.BagReader, run: RunDirectory,
                  records: list[dict[str, Any]], gt_topic: str, overlaps: str = "keep") -> Scores:
    """J and F of every scored (frame, target) pair; mIoU/FB-IoU for one-shot plans."""
    if overlaps not in OVERLAP_RULES:
        raise ValueError(f"overlaps must be one of {OVERLAP_RULES}, got {overlaps!r}")
    by_stamp = {int(r["stamp_ns"]): r for r in records}
    index_of = plan.index_of_stamp()
    episode_of = {i: ep for ep in plan.episodes for i in ep.frames}
    out = Scores(episodes=metrics.EpisodeAccumulator() if plan.protocol == "one-shot" else None)
    last: dict[tuple[int, int], np.ndarray] = {}  # (episode, target) -> latest prediction
    frame_scores: dict[int, list[metrics.FrameScore]] = {t: [] for t in plan.targets}
    ignore = reader.ignore_label()

    for stamp, lm in reader.label_maps(gt_topic):
        i = index_of.get(stamp)
        ep = episode_of.get(i) if i is not None else None
        if ep is None:
            continue  # beyond --max-frames, or before the first one-shot reference
        rec = by_stamp.get(stamp)
        pred = run.load_masks(int(rec["frame"])) if rec is not None else {}
        scored: dict[int, np.ndarray] = {}  # target -> the mask it is scored with
        for p in ep.prompts:
            if p.stamp_ns > stamp or p.on_frame == i:
                continue
            key = (ep.index, p.target_id)
            if rec is not None:
                mask = pred.get(p.target_id)
                if mask is None or mask.shape != lm.shape:
                    mask = np.zeros(lm.shape, bool)
                last[key] = mask
            elif key in last:
                mask = last[key]
                out.held += 1
            else:
                mask = np.zeros(lm.shape, bool)
                out.held += 1
            scored[p.target_id] = mask
        if overlaps == "label-map":
            scored = as_label_map(scored)
        labels = {p.target_id: p.label for p in ep.prompts}
        valid = None if ignore is None else lm != ignore
        for tid, mask in scored.items():
            gt = lm == tid
            if valid is not None:
                mask = mask & valid
            s = metrics.score_frame(mask, gt)
            frame_scores[tid].append(s)
            out.rows.append({"frame": i, "stamp_ns": stamp, "episode": ep.index,
                             "target_id": tid, "label": labels[tid], "j": s.j, "f": s.f,
                             "gt_area": int(gt.sum()), "pred_area": int(mask.sum()),
                             "has_result": rec is not None})
            if out.episodes is not None:
                out.episodes.add(labels[tid], mask, gt, valid)
    out.per_target = {t: metrics.score_sequence(v) for t, v in frame_scores.items()}
    return out


def worst_overlays(plan: EvalPlan, reader: bags.BagReader, run: RunDirectory,
                   rows: list[dict[str, Any]], camera_topic: str, gt_topic: str,
                   count: int = 4, overlaps: str = "keep") -> list[Overlay]:
    """Tiles for the ``count`` worst (frame, target) pairs by (J+F)/2, one per frame."""
    chosen: list[dict[str, Any]] = []
    seen: set[int] = set()
    for r in heapq.nsmallest(len(rows), rows, key=lambda r: (r["j"] + r["f"], r["frame"])):
        if r["frame"] not in seen:
            chosen.append(r)
            seen.add(r["frame"])
        if len(chosen) == count:
            break
    if not chosen:
        return []
    want = {r["frame"]: r for r in chosen}
    images: dict[int, np.ndarray] = {}
    for frame in reader.frames(camera_topic):
        if frame.index in want:
            images[frame.index] = frame.image
            if len(images) == len(want):
                break
    stamps = {r["stamp_ns"]: r for r in chosen}
    gts: dict[int, np.ndarray] = {}
    for stamp, lm in reader.label_maps(gt_topic):
        if stamp in stamps:
            gts[stamps[stamp]["frame"]] = lm == stamps[stamp]["target_id"]
    order = sorted(plan.targets)
    tiles = []
    for r in sorted(chosen, key=lambda r: r["frame"]):
        i = r["frame"]
        pred = None
        if r["has_result"]:
            masks = run.load_masks(i)
            pred = (as_label_map(masks) if overlaps == "label-map" else masks).get(r["target_id"])
        if pred is None:
            pred = np.zeros(gts[i].shape, bool)
        colour = target_colour(order.index(r["target_id"]) if r["target_id"] in order else 0)
        title = f"frame {i}, {r['target_id']}: {r['label']}\nJ={r['j']:.2f} F={r['f']:.2f}"
        if not r["has_result"]:
            title += " (no result)"
        tiles.append(Overlay(title, images[i], pred, gts[i], colour))
    return tiles


def build_report(plan: EvalPlan, scores: Scores, records: list[dict[str, Any]],
                 info: dict[str, Any], timing_label: str, overlays: list[Overlay],
                 title: str) -> ReportData:
    """Headline numbers, tables and series for report.json / report.md."""
    per_target = {}
    for tid, s in scores.per_target.items():
        per_target[str(tid)] = {"label": plan.targets[tid], "frames": s.frames,
                                "jf_mean": s.jf_mean, "j_mean": s.j_mean, "f_mean": s.f_mean,
                                "j_recall": s.j_recall, "f_recall": s.f_recall,
                                "j_decay": s.j_decay, "f_decay": s.f_decay}
    summary: dict[str, Any] = {}
    oneshot = None
    if scores.episodes is not None:
        acc = scores.episodes
        summary.update({"miou": acc.miou(), "fb_iou": acc.fb_iou(), "episodes": acc.episodes})
        oneshot = {"miou": acc.miou(), "fb_iou": acc.fb_iou(), "episodes": acc.episodes,
                   "class_iou": acc.class_iou()}
        js = [r["j"] for r in scores.rows]
        fs = [r["f"] for r in scores.rows]
        summary.update({"j_mean": float(np.mean(js)) if js else float("nan"),
                        "f_mean": float(np.mean(fs)) if fs else float("nan")})
        summary["jf_mean"] = (summary["j_mean"] + summary["f_mean"]) / 2
    else:
        ov = metrics.overall(scores.per_target)
        keys = ("jf_mean", "j_mean", "f_mean", "j_recall", "f_recall", "j_decay", "f_decay",
                "targets")
        summary.update({k: ov[k] for k in keys})
    summary["scored_pairs"] = len(scores.rows)
    absent = [r for r in scores.rows if r["gt_area"] == 0]
    summary["absent_pairs"] = len(absent)  # (frame, target) pairs where the object is not there
    # share of those with a published mask: a mask where there is no object
    summary["false_positive_rate"] = (sum(r["pred_area"] > 0 for r in absent) / len(absent)
                                      if absent else float("nan"))
    timing = [r["seconds"] for r in records if r.get("seconds") is not None]
    latency = dict(metrics.latency_summary(timing), what=timing_label)
    sent = [plan.frame_stamps[i] for ep in plan.episodes for i in ep.frames]
    drops = metrics.dropped_frames(sent, [int(r["stamp_ns"]) for r in records])
    node_counts = info.get("source", {}).get("node_diagnostics") or {}
    for key in ("frames_dropped", "frames_rejected"):
        if node_counts.get(key) is not None:  # live mode: the node's own /diagnostics
            drops[f"node_{key}"] = node_counts[key]
    notes = []
    if info.get("source", {}).get("random_weights"):
        notes.append("The model has random weights (no checkpoint was given): these numbers "
                     "exercise the pipeline and say nothing about segmentation quality.")
    if plan.untaught:
        names = ", ".join(f"{k} ({v})" for k, v in sorted(plan.untaught.items()))
        notes.append(f"Ground-truth objects without a reference were not evaluated: {names}.")
    if scores.held:
        notes.append(f"{scores.held} scored pairs had no result for their frame and were "
                     "scored with the previous result.")
    return ReportData(
        title=title, info=info, summary=summary, per_target=per_target, frames=scores.rows,
        latency=latency,
        latency_series=[{"frame": r["frame"], "seconds": r["seconds"]} for r in records
                        if r.get("seconds") is not None],
        drops={k: v for k, v in drops.items() if k != "dropped_stamps"} | {
            "dropped_stamps": drops["dropped_stamps"][:100]},
        oneshot=oneshot, overlays=overlays, notes=notes)
