"""Scores for segmentation results: J, F and J&F (video), mIoU and FB-IoU (one-shot),
latency percentiles and dropped frames.

J and F follow the DAVIS benchmark's definitions so that numbers are comparable with
published ones: J is the region IoU, F the boundary F-measure with boundaries matched
within a tolerance of 0.8 % of the image diagonal. Both score an empty prediction
against an empty ground truth as perfect, which is what a tracker that correctly
reports an occluded object deserves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

#: DAVIS boundary tolerance, as a fraction of the image diagonal.
BOUND_TH = 0.008


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_bool(pred, "prediction"), _as_bool(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    return p, g


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: intersection over union of two binary masks; both empty scores 1.0."""
    p, g = _check_pair(pred, gt)
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g) / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask (the DAVIS ``seg2bmap`` rule).

    A pixel is on the boundary when it differs from its right, bottom or bottom-right
    neighbour. In the last row only the right neighbour counts, in the last column only
    the bottom one, and the bottom-right corner is never a boundary pixel, so that a
    mask touching the image border gets no boundary along that border.
    """
    seg = _as_bool(mask, "mask")
    h, w = seg.shape
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    bmap[h - 1, :] = seg[h - 1, :] ^ right[h - 1, :]
    bmap[:, w - 1] = seg[:, w - 1] ^ below[:, w - 1]
    bmap[h - 1, w - 1] = False
    return bmap


def boundary_tolerance_px(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Matching radius in pixels: ``bound_th`` itself when >= 1, else a diagonal fraction."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def disk(radius: int) -> np.ndarray:
    """Structuring element of the pixels within Euclidean distance ``radius`` of the centre."""
    r = int(radius)
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


@dataclass(frozen=True)
class BoundaryScore:
    """Boundary precision, recall and their F-measure."""

    precision: float
    recall: float
    f: float


def boundary_score(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> BoundaryScore:
    """F with its precision and recall (DAVIS definition).

    Precision is the share of predicted boundary pixels lying within the tolerance
    radius of a ground-truth boundary pixel; recall the converse. Both boundaries empty
    scores 1.0; exactly one empty scores 0.0.
    """
    p, g = _check_pair(pred, gt)
    pb, gb = boundary_map(p), boundary_map(g)
    n_pred, n_gt = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_pred == 0 and n_gt == 0:
        return BoundaryScore(1.0, 1.0, 1.0)
    if n_pred == 0:
        return BoundaryScore(1.0, 0.0, 0.0)
    if n_gt == 0:
        return BoundaryScore(0.0, 1.0, 0.0)
    kernel = disk(boundary_tolerance_px(p.shape, bound_th))
    pred_near = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    gt_near = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pb & gt_near) / n_pred
    recall = np.count_nonzero(gb & pred_near) / n_gt
    if precision + recall == 0:
        return BoundaryScore(float(precision), float(recall), 0.0)
    f = 2 * precision * recall / (precision + recall)
    return BoundaryScore(float(precision), float(recall), float(f))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F: the boundary F-measure of :func:`boundary_score`."""
    return boundary_score(pred, gt, bound_th).f


@dataclass(frozen=True)
class FrameScore:
    """J, F and their mean for one target on one frame."""

    j: float
    f: float

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def score_frame(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> FrameScore:
    """J and F of one prediction against its ground truth."""
    return FrameScore(region_similarity(pred, gt), boundary_f(pred, gt, bound_th))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _recall(values: Sequence[float], threshold: float = 0.5) -> float:
    return float(np.mean(np.asarray(values) > threshold)) if len(values) else float("nan")


def _decay(values: Sequence[float], bins: int = 4) -> float:
    """DAVIS decay as the official toolkit computes it (davis2017-evaluation,
    ``utils.db_statistics``): bin edges ``round(linspace(1, n, 5)) - 1``, bin k holding
    frames ``edge[k] .. edge[k+1]`` inclusive (neighbouring bins share a frame), decay =
    mean of the first bin minus mean of the last. (The toolkit casts the edges to uint8,
    which wraps above 256 frames; the edges here do not wrap.)"""
    n = len(values)
    if n == 0:
        return float("nan")
    arr = np.asarray(values, dtype=float)
    edges = (np.round(np.linspace(1, n, bins + 1) + 1e-10) - 1).astype(int)
    first = arr[edges[0] : edges[1] + 1]
    last = arr[edges[bins - 1] : edges[bins] + 1]
    return float(first.mean() - last.mean())


@dataclass(frozen=True)
class SequenceScore:
    """One target's scores over the frames of a sequence (DAVIS statistics)."""

    frames: int
    j_mean: float
    f_mean: float
    j_recall: float
    f_recall: float
    j_decay: float
    f_decay: float

    @property
    def jf_mean(self) -> float:
        return (self.j_mean + self.f_mean) / 2


def score_sequence(frame_scores: Sequence[FrameScore]) -> SequenceScore:
    """Mean, recall (share above 0.5) and decay of J and F over a target's frames."""
    js = [s.j for s in frame_scores]
    fs = [s.f for s in frame_scores]
    return SequenceScore(
        frames=len(frame_scores),
        j_mean=_mean(js),
        f_mean=_mean(fs),
        j_recall=_recall(js),
        f_recall=_recall(fs),
        j_decay=_decay(js),
        f_decay=_decay(fs),
    )


def overall(per_target: Mapping[object, SequenceScore]) -> dict[str, float]:
    """Benchmark summary: the mean over targets of each per-target statistic.

    Each target counts once whatever its length, as in DAVIS, so a long sequence does
    not drown a short one.
    """
    scored = [s for s in per_target.values() if s.frames > 0]
    out = {
        key: _mean([getattr(s, key) for s in scored])
        for key in ("j_mean", "f_mean", "j_recall", "f_recall", "j_decay", "f_decay")
    }
    out["jf_mean"] = (out["j_mean"] + out["f_mean"]) / 2
    out["targets"] = len(scored)
    return out


@dataclass
class EpisodeAccumulator:
    """mIoU and FB-IoU over one-shot episodes, accumulated as in few-shot benchmarks.

    Intersections and unions are summed over all episodes of a class before dividing
    (so large objects weigh more within a class), mIoU averages the per-class
    foreground IoU, and FB-IoU averages foreground and background IoU summed over all
    episodes regardless of class.
    """

    inter: dict[str, int] = field(default_factory=dict)
    union: dict[str, int] = field(default_factory=dict)
    fg_inter: int = 0
    fg_union: int = 0
    bg_inter: int = 0
    bg_union: int = 0
    episodes: int = 0

    def add(self, class_name: str, pred: np.ndarray, gt: np.ndarray,
            valid: np.ndarray | None = None) -> float:
        """Add one episode; returns its own foreground IoU (1.0 when both are empty).
        ``valid``: the pixels that count (ignored ground-truth pixels left out of the
        foreground and the background alike)."""
        p, g = _check_pair(pred, gt)
        if valid is not None:
            v = _as_bool(valid, "valid")
            p, g = p & v, g & v
            bi = int(np.count_nonzero(~p & ~g & v))
            bu = int(np.count_nonzero((~p | ~g) & v))
        else:
            bi = int(np.count_nonzero(~p & ~g))
            bu = int(np.count_nonzero(~p | ~g))
        i = int(np.count_nonzero(p & g))
        u = int(np.count_nonzero(p | g))
        self.inter[class_name] = self.inter.get(class_name, 0) + i
        self.union[class_name] = self.union.get(class_name, 0) + u
        self.fg_inter += i
        self.fg_union += u
        self.bg_inter += bi
        self.bg_union += bu
        self.episodes += 1
        return 1.0 if u == 0 else i / u

    def class_iou(self) -> dict[str, float]:
        """Foreground IoU per class (1.0 for a class whose episodes were all empty)."""
        return {c: (self.inter[c] / self.union[c] if self.union[c] else 1.0) for c in self.inter}

    def miou(self) -> float:
        ious = list(self.class_iou().values())
        return _mean(ious)

    def fb_iou(self) -> float:
        fg = self.fg_inter / self.fg_union if self.fg_union else 1.0
        bg = self.bg_inter / self.bg_union if self.bg_union else 1.0
        return (fg + bg) / 2 if self.episodes else float("nan")


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean of latencies in seconds.

    Percentiles use the nearest-rank rule (numpy's ``inverted_cdf``), so each one is a
    latency that was actually measured: p99 of 100 samples is the 99th smallest.
    """
    arr = np.asarray([float(x) for x in latencies_s], dtype=float)
    if arr.size == 0:
        nan = float("nan")
        return {"count": 0, "p50": nan, "p90": nan, "p99": nan, "max": nan, "mean": nan}
    ordered = np.sort(arr)
    # rank ceil(p * n / 100), in integers (numpy < 1.22 has no percentile method argument)
    p50, p90, p99 = (ordered[max((p * arr.size + 99) // 100, 1) - 1] for p in (50, 90, 99))
    return {
        "count": int(arr.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def dropped_frames(sent_stamps: Iterable[int], result_stamps: Iterable[int]) -> dict[str, object]:
    """Frames that were sent but got no result, by stamp.

    Offline replay processes every frame, so it reports zero; the count matters for
    live replay, where a busy node drops stale frames on purpose.
    """
    sent = list(sent_stamps)
    got = set(result_stamps)
    missing = [s for s in sent if s not in got]
    return {
        "sent": len(sent),
        "with_result": len(sent) - len(missing),
        "dropped": len(missing),
        "drop_rate": (len(missing) / len(sent)) if sent else 0.0,
        "dropped_stamps": missing,
    }
