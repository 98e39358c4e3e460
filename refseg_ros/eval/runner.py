"""Run an evaluation: plan from the bag, results from a source, scores, report.

Stages, each leaving a trace in the output directory (see ``outdir``):

1. plan: read and check the bag (nothing is written if it is unusable);
2. inference: results.jsonl + pred/ masks, then ``inference.done``;
3. scoring and report: report.json, report.md, plots, then ``.complete``.

What resuming means (same bag, same settings, same output directory):

- a finished run is not redone;
- a run whose inference finished only redoes scoring and the report;
- an interrupted inference skips the episodes it finished (one-shot episodes are
  independent). The episode it was in, and a video (one episode), is replayed from its
  first frame, because the engine's memory at a frame depends on every earlier frame.
  Frames recorded before the interruption are not rewritten: the replay checks that it
  reproduces them (mask digests) and, from the first frame where it does not, discards
  the stored results and keeps the new ones. Either way the scores equal a fresh run's.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from refseg_ros.eval import bags
from refseg_ros.eval import depth as depth_io
from refseg_ros.eval.outdir import (COMPLETE, INFERENCE_DONE, RUN_FILE, RunDirectory,
                                    mask_digest)
from refseg_ros.eval.plan import EvalPlan, make_plan
from refseg_ros.eval.report import ReportData, write_report
from refseg_ros.eval.scoring import build_report, score_results, worst_overlays
from refseg_ros.eval.sources import EngineReplaySource, EngineSettings, ResultSource

log = logging.getLogger("refseg_ros.eval")


@dataclass
class RunConfig:
    bag: Path
    out: Path
    prompt: str = "auto"
    camera_topic: str = bags.CAMERA_TOPIC
    gt_topic: str = bags.GROUND_TRUTH_TOPIC
    reference_topic: str = bags.REFERENCE_TOPIC
    caption_topic: str = bags.CAPTION_TOPIC
    max_frames: Optional[int] = None
    overwrite: bool = False
    progress: Optional[bool] = None  # None: a bar only on a terminal
    worst_frames: int = 4
    overlaps: str = "keep"  # scoring.OVERLAP_RULES: per-target masks, or one label map per frame
    engine: EngineSettings = field(default_factory=EngineSettings)


@dataclass
class RunOutcome:
    report_path: Path
    report: Optional[ReportData]  # None when a finished run was found and not redone
    resumed: dict[str, Any]  # what was reused from an earlier run


def bag_fingerprint(path: Path) -> dict[str, Any]:
    """Identify the bag's content cheaply: resolved path, file sizes and modification
    times (a rewritten bag is a different bag, even at the same size)."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return {"path": str(path),
            "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}


def run_info(cfg: RunConfig, plan: EvalPlan, source_settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs the same run (stored as run.json)."""
    return {
        "bag": bag_fingerprint(cfg.bag),
        "protocol": plan.protocol,
        "prompt": plan.prompt_mode,
        "topics": {"camera": cfg.camera_topic, "ground_truth": cfg.gt_topic,
                   "reference": cfg.reference_topic},
        "max_frames": cfg.max_frames,
        "overlaps": cfg.overlaps,
        "source": source_settings,
    }


def _progress(total: int, initial: int, enabled: Optional[bool]) -> Any:
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, unit="frame", disable=disable, desc="evaluating")


def _record(index: int, res: Any) -> dict[str, Any]:
    targets = {}
    for gid, mask in sorted(res.masks.items()):
        targets[str(gid)] = {"digest": mask_digest(mask), "area": int(mask.sum()),
                             "score": res.scores.get(gid), "state": res.states.get(gid)}
    return {"frame": index, "stamp_ns": res.stamp_ns, "episode": res.episode,
            "seconds": res.seconds, "targets": targets}


def run_inference(plan: EvalPlan, reader: bags.BagReader, run: RunDirectory,
                  source: ResultSource, cfg: RunConfig, resume: bool) -> dict[str, Any]:
    """Stage 2: fill results.jsonl and pred/; returns what was reused."""
    records = run.read_results() if resume else []
    if not resume:
        run.truncate_results(0)
    position = {int(r["frame"]): k for k, r in enumerate(records)}
    done = {ep.index for ep in plan.episodes if all(i in position for i in ep.frames)}
    skipped_frames = sum(len(ep.frames) for ep in plan.episodes if ep.index in done)
    index_of = plan.index_of_stamp()
    verified = replaced = 0
    diverged = False
    bar = _progress(plan.num_frames, skipped_frames, cfg.progress)
    results = source.results(plan, reader, cfg.camera_topic, done)
    try:
        for res in results:
            i = index_of.get(res.stamp_ns)
            if i is None:
                log.warning("result for unknown stamp %d ignored", res.stamp_ns)
                continue
            rec = _record(i, res)
            if not diverged and i in position:
                old = records[position[i]]
                if {k: v["digest"] for k, v in old["targets"].items()} == \
                        {k: v["digest"] for k, v in rec["targets"].items()}:
                    verified += 1
                    bar.update(1)
                    continue
                diverged = True
                replaced = len(records) - position[i]
                log.warning("replay differs from the stored results at frame %d; replacing the "
                            "%d stored frames from there", i, replaced)
                run.truncate_results(position[i])
            run.save_masks(i, res.masks)
            run.append_results([rec])
            bar.update(1)
    finally:
        # Close the source's generator now, not whenever it is collected: a live
        # source stops its node there, also on errors and Ctrl-C.
        close = getattr(results, "close", None)
        try:
            if close is not None:
                close()
        finally:
            bar.close()
    return {"episodes_skipped": len(done), "frames_skipped": skipped_frames,
            "frames_verified": verified, "frames_replaced": replaced}


def evaluate(cfg: RunConfig, source: Optional[ResultSource] = None,
             title: Optional[str] = None) -> RunOutcome:
    """Evaluate one bag; see the module docstring for stages and resuming.

    ``source`` defaults to offline engine replay with ``cfg.engine``; the live source
    (``refseg_ros.eval.live.LiveNodeSource``) plugs in here.
    """
    with bags.BagReader(cfg.bag) as reader:
        plan = make_plan(reader, prompt=cfg.prompt, camera_topic=cfg.camera_topic,
                         gt_topic=cfg.gt_topic, reference_topic=cfg.reference_topic,
                         caption_topic=cfg.caption_topic, max_frames=cfg.max_frames)
        if source is None:
            source = EngineReplaySource(cfg.engine)
            settings = cfg.engine.as_dict()
        else:
            fingerprint = getattr(source, "fingerprint", None)
            settings = fingerprint() if callable(fingerprint) else {"kind": type(source).__name__}
        if plan.prompt_mode == "caption" and callable(getattr(source, "captions", None)):
            source.captions()  # no text model: refused before anything is written
        if plan.prompt_mode == "reference-topic" and callable(getattr(source, "reference_adapters", None)):
            source.reference_adapters()  # the mode's models, likewise
        info = run_info(cfg, plan, settings)
        run = RunDirectory(cfg.out)
        if not cfg.overwrite and _finished(run, info):
            log.info("%s already holds this run's finished report", cfg.out)
            return RunOutcome(run.path / "report.md", None, {"finished": True})
        same = run.claim(info, overwrite=cfg.overwrite)
        resumed: dict[str, Any] = {"finished": False, "inference_reused": False}
        done_info = _read_json(run.path / INFERENCE_DONE) if same else None
        if done_info is not None:
            resumed["inference_reused"] = True
            source_info, timing = done_info["source"], done_info["timing"]
        else:
            run.discard_marker(INFERENCE_DONE)
            resumed.update(run_inference(plan, reader, run, source, cfg, resume=same))
            source_info, timing = source.info(), source.timing_label()
            run.write_marker(INFERENCE_DONE, {"source": source_info, "timing": timing,
                                              "frames": plan.num_frames})
        records = run.read_results()
        scores = score_results(plan, reader, run, records, cfg.gt_topic, cfg.overlaps)
        overlays = worst_overlays(plan, reader, run, scores.rows, cfg.camera_topic,
                                  cfg.gt_topic, cfg.worst_frames, cfg.overlaps)
        full_info = dict(info, source=source_info, resumed=resumed,
                         targets={str(k): v for k, v in plan.targets.items()})
        data = build_report(plan, scores, records, full_info, timing, overlays,
                            title or f"Evaluation of {Path(cfg.bag).name}")
        if depth_io.has_depth(reader):  # depth and CameraInfo: where the targets are, too
            data.summary.update(depth_io.position_errors(reader, run, scores.rows, cfg.gt_topic))
            data.notes.append("Position error: metres between the 3D points of the predicted and the "
                              "ground-truth mask (median valid depth on the centroid ray, the node's rule) "
                              f"on the bag's depth ({depth_io.DEPTH_TOPIC}, {depth_io.CAMERA_INFO_TOPIC}).")
        path = write_report(run.path, data)
        return RunOutcome(path, data, resumed)


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _finished(run: RunDirectory, info: dict[str, Any]) -> bool:
    previous = _read_json(run.path / RUN_FILE)
    same = previous == json.loads(json.dumps(info, default=str))
    return same and run.has_marker(COMPLETE) and (run.path / "report.md").exists()
