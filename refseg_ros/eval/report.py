"""The evaluation report: report.json (every number), report.md (for people) and PNG plots.

Plots are drawn with matplotlib's object API on an Agg canvas, never through pyplot, so
the report sets no global backend and works headless and inside other programs. All
files go through atomic writes and ``.complete`` is written last (see ``outdir``).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from refseg_ros.eval.outdir import (COMPLETE, atomic_write_bytes, atomic_write_json,
                                    atomic_write_text)

PLOTS_DIR = "plots"

# Tableau-10 colours (RGB 0-255): one per target, stable by order of target id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


def target_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


@dataclass
class Overlay:
    """One tile of the worst-frames strip: a frame, the prediction and the ground truth."""

    title: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    pred: np.ndarray  # H x W bool
    gt: np.ndarray  # H x W bool
    colour: tuple[int, int, int] = PALETTE[0]


@dataclass
class ReportData:
    """Everything a report shows; the runner fills it, live or offline alike."""

    title: str
    info: dict[str, Any]  # bag, protocol, prompt mode, engine settings
    summary: dict[str, Any]  # headline numbers
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)  # per frame and target: j, f
    latency: dict[str, Any] = field(default_factory=dict)
    latency_series: list[dict[str, Any]] = field(default_factory=list)  # frame, seconds
    drops: dict[str, Any] = field(default_factory=dict)
    oneshot: Optional[dict[str, Any]] = None  # class_iou, miou, fb_iou
    overlays: list[Overlay] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- drawing ---------------------------------------------------------------------------


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def overlay_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray,
                  colour: tuple[int, int, int] = PALETTE[0], alpha: float = 0.5) -> np.ndarray:
    """The frame with the prediction filled in colour and the ground truth's contour in
    white (outlined in black so it shows on any background). Small frames are enlarged
    (nearest neighbour) so that the contour does not cover the object."""
    scale = max(1, math.ceil(320 / max(1, image.shape[1])))
    if scale > 1:
        size = (image.shape[1] * scale, image.shape[0] * scale)
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        pred = cv2.resize(np.asarray(pred, np.uint8), size, interpolation=cv2.INTER_NEAREST)
        gt = cv2.resize(np.asarray(gt, np.uint8), size, interpolation=cv2.INTER_NEAREST)
    out = image.astype(np.float32).copy()
    p = np.asarray(pred, bool)
    out[p] = (1 - alpha) * out[p] + alpha * np.asarray(colour, np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(np.asarray(gt, np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    thick = max(1, round(min(image.shape[:2]) / 200))
    cv2.drawContours(out, contours, -1, (0, 0, 0), thick + 2)
    cv2.drawContours(out, contours, -1, (255, 255, 255), thick)
    return out


def plot_j_over_time(frames: Sequence[dict[str, Any]], x_key: str = "frame") -> bytes:
    """J per frame (or per episode, ``x_key="episode"``), one line per target."""
    fig = _figure(8, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    by_target: dict[str, list[tuple[int, float]]] = {}
    labels: dict[str, str] = {}
    for r in frames:
        key = str(r["target_id"])
        by_target.setdefault(key, []).append((r[x_key], r["j"]))
        labels[key] = r.get("label", key)
    for i, key in enumerate(sorted(by_target, key=lambda k: (len(k), k))):
        xs, ys = zip(*sorted(by_target[key]))
        colour = np.asarray(target_colour(i)) / 255
        ax.plot(xs, ys, marker="." if len(xs) < 60 else None, color=colour,
                label=f"{key}: {labels[key]}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(x_key)
    ax.set_ylabel("J (IoU)")
    ax.set_title("Region similarity per frame")
    ax.grid(alpha=0.3)
    if by_target:
        ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return _png(fig)


def plot_latency(series: Sequence[dict[str, Any]], summary: dict[str, Any],
                 what: str = "latency") -> bytes:
    """Per-frame time with the p50/p90/p99 lines."""
    fig = _figure(8, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    if series:
        xs = [r["frame"] for r in series]
        ys = [1000 * r["seconds"] for r in series]
        ax.plot(xs, ys, color="tab:blue", lw=1)
        for key, style in (("p50", "--"), ("p90", "-."), ("p99", ":")):
            v = summary.get(key)
            if v is not None and not math.isnan(v):
                ax.axhline(1000 * v, color="tab:red", ls=style, lw=1,
                           label=f"{key} {1000 * v:.1f} ms")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_xlabel("frame")
    ax.set_ylabel("ms")
    ax.set_title(f"{what.capitalize()} per frame")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_per_sequence(names: Sequence[str], series: dict[str, Sequence[Optional[float]]],
                      ylabel: str, title: str, ylim: Optional[tuple[float, float]] = None) -> bytes:
    """Grouped bars, one group per sequence and one bar per series (a benchmark's
    per-sequence J&F, or step times); a missing value (None or NaN) leaves its bar out.
    Sequence names label the bars up to 40 sequences, beyond that the axis counts them."""
    n = len(names)
    fig = _figure(min(max(6.0, 0.35 * n + 2), 20), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    keys = list(series)
    width = 0.8 / max(1, len(keys))
    xs = np.arange(n, dtype=float)
    for k, key in enumerate(keys):
        vals = np.asarray([np.nan if v is None else float(v) for v in series[key]], float)
        ax.bar(xs + (k - (len(keys) - 1) / 2) * width, np.nan_to_num(vals, nan=0.0),
               width=width, color=np.asarray(target_colour(k)) / 255, label=key)
    if 0 < n <= 40:
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize="small")
    else:
        ax.set_xlabel("sequence")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if len(keys) > 1:
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return _png(fig)


def plot_overlays(overlays: Sequence[Overlay]) -> bytes:
    """A strip of the worst frames: prediction in colour, ground truth contour in white."""
    n = max(1, len(overlays))
    aspect = 4 / 3
    if overlays:
        h, w = overlays[0].image.shape[:2]
        aspect = w / h
    fig = _figure(min(4 * n, 20), min(4 * n, 20) / n / aspect + 0.6)
    for i, ov in enumerate(overlays):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(overlay_image(ov.image, ov.pred, ov.gt, ov.colour))
        ax.set_title(ov.title, fontsize="small")
        ax.axis("off")
    if not overlays:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no scored frames", ha="center", va="center")
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


# --- text ------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _ms(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{1000 * v:.1f}"


def render_markdown(data: ReportData, plots: dict[str, str]) -> str:
    """report.md: headline numbers, per-target table, latency, plots, run details."""
    lines = [f"# {data.title}", ""]
    for note in data.notes:
        lines += [f"> **Note:** {note}", ""]
    lines += ["## Summary", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in data.summary.items()]
    lines.append("")
    if data.per_target:
        lines += ["## Per target", "",
                  "| id | label | frames | J&F | J | F | J recall | F recall | J decay |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for tid, s in data.per_target.items():
            lines.append("| " + " | ".join([
                tid, str(s.get("label", "")), str(s.get("frames", "")), _fmt(s.get("jf_mean")),
                _fmt(s.get("j_mean")), _fmt(s.get("f_mean")), _fmt(s.get("j_recall")),
                _fmt(s.get("f_recall")), _fmt(s.get("j_decay"))]) + " |")
        lines.append("")
    if data.oneshot:
        lines += ["## One-shot", "", f"- episodes: {data.oneshot.get('episodes')}",
                  f"- mIoU: {_fmt(data.oneshot.get('miou'))}",
                  f"- FB-IoU: {_fmt(data.oneshot.get('fb_iou'))}", "",
                  "| class | IoU |", "|---|---|"]
        lines += [f"| {c} | {_fmt(v)} |" for c, v in data.oneshot.get("class_iou", {}).items()]
        lines.append("")
    if data.latency:
        lat = data.latency
        lines += ["## Timing", "", f"Measured: {lat.get('what', 'latency')} "
                  f"({lat.get('count', 0)} frames).", "",
                  "| p50 ms | p90 ms | p99 ms | max ms | mean ms |", "|---|---|---|---|---|",
                  f"| {_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | "
                  f"{_ms(lat.get('max'))} | {_ms(lat.get('mean'))} |", ""]
    if data.drops:
        line = (f"Frames sent: {data.drops.get('sent')}, with a result: "
                f"{data.drops.get('with_result')}, dropped: {data.drops.get('dropped')}.")
        if "node_frames_dropped" in data.drops:
            line += (f" The node's /diagnostics: {data.drops['node_frames_dropped']} dropped, "
                     f"{data.drops.get('node_frames_rejected')} rejected.")
        lines += [line, ""]
    if plots:
        lines += ["## Plots", ""]
        for caption, rel in plots.items():
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    lines += ["## Run", "", "```json"]
    lines += [json.dumps(data.info, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def finite(obj: Any) -> Any:
    """NaN and infinities become None (null): strict JSON has no spelling for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def report_json(data: ReportData) -> dict[str, Any]:
    """The report's numbers as strict JSON (no NaN)."""
    return finite({
        "title": data.title,
        "info": data.info,
        "summary": data.summary,
        "per_target": data.per_target,
        "oneshot": data.oneshot,
        "latency": data.latency,
        "drops": data.drops,
        "frames": data.frames,
        "latency_series": data.latency_series,
        "notes": data.notes,
    })


def write_report(out_dir: str | Path, data: ReportData) -> Path:
    """Write plots, report.json and report.md, then the ``.complete`` marker.

    Any stale ``.complete`` is removed first, so a report being rewritten is never taken
    for a finished one.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        (out / COMPLETE).unlink()
    except FileNotFoundError:
        pass
    x_key = "episode" if data.oneshot else "frame"
    plots = {
        "J per frame": ("j_over_time.png", plot_j_over_time(data.frames, x_key)),
        "Timing per frame": ("latency.png", plot_latency(data.latency_series, data.latency,
                                                         data.latency.get("what", "latency"))),
        "Worst frames": ("worst_frames.png", plot_overlays(data.overlays)),
    }
    rel: dict[str, str] = {}
    for caption, (name, png) in plots.items():
        atomic_write_bytes(out / PLOTS_DIR / name, png)
        rel[caption] = f"{PLOTS_DIR}/{name}"
    atomic_write_json(out / "report.json", report_json(data))
    atomic_write_text(out / "report.md", render_markdown(data, rel))
    atomic_write_json(out / COMPLETE, {"report": "report.md"})
    return out / "report.md"


COMPARED = (("miou", "mIoU"), ("fb_iou", "FB-IoU"), ("jf_mean", "J&F"),
            ("false_positive_rate", "false-positive rate"), ("absent_pairs", "absent pairs"))


def compare_runs(runs: list[Path]) -> str:
    """A Markdown table of finished runs side by side: per run, its reference mode (from
    run.json) and the summary numbers of COMPARED plus the median step time (seconds).
    The false-positive rate is the share of (frame, target) pairs whose object is absent
    that got a mask. Raises FileNotFoundError naming a run without report.json."""
    header = ["run", "mode"] + [name for _, name in COMPARED] + ["median step (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        report = Path(run) / "report.json"
        if not report.is_file():
            raise FileNotFoundError(f"{run} has no report.json: not a finished run")
        data = json.loads(report.read_text())
        info = json.loads((Path(run) / "run.json").read_text()) if (Path(run) / "run.json").is_file() else {}
        mode = (info.get("source") or {}).get("reference_mode", "baseline")
        summary = data.get("summary", {})
        cells = [Path(run).name, mode] + [_fmt(summary.get(key)) for key, _ in COMPARED]
        cells.append(_fmt((data.get("latency") or {}).get("p50")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
